// PolicyStore: first load, reloads (file watch, rename-replace, signal, api), last-good on error, versions, serialization, watcher cleanup.
import { closeSync, mkdtempSync, openSync, renameSync, rmSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { emptyCatalog } from '../../../policy/catalog.ts';
import { PolicyLoadError, PolicyStore, type PolicyChange, type PolicyStoreOptions } from '../../../policy/store.ts';
import type { CatalogSnapshot, CompiledPolicy } from '../../../policy/types.ts';

const POLICY_A = `roles:
  analyst:
    relations: [public.orders, public.customers]
    deniedColumns: { public.customers: [ssn] }
    maxRows: 100
  ops:
    relations: [public.orders]
`;
const POLICY_B = `roles:
  analyst:
    relations: [public.orders]
    maxRows: 10
  auditor:
    relations: [public.audit]
`;
const INVALID = `roles:
  analyst:
    maxRows: -1
    relations: [orders]
`;

interface LogLine {
  level: string;
  msg: string;
  fields?: object;
}

let dir: string;
let file: string;
let stores: PolicyStore[];
let logs: LogLine[];
let catalogCalls: number;

function fakeCatalog(): (policy: CompiledPolicy) => Promise<CatalogSnapshot> {
  return async () => {
    catalogCalls++;
    return { ...emptyCatalog(`db${catalogCalls}`) };
  };
}

async function open(opts: Partial<PolicyStoreOptions> = {}): Promise<PolicyStore> {
  const store = await PolicyStore.open({
    file,
    loadCatalog: fakeCatalog(),
    log: (level, msg, fields) => logs.push(fields === undefined ? { level, msg } : { level, msg, fields }),
    watch: false,
    debounceMs: 30,
    settleMs: 20,
    ...opts,
  });
  stores.push(store);
  return store;
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Live fs.watch handles; a closed handle is released on a later loop turn, so let the loop run first. */
async function fsWatchers(): Promise<number> {
  await sleep(20);
  return process.getActiveResourcesInfo().filter((r) => r === 'FSEventWrap').length;
}

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-store-'));
  file = path.join(dir, 'policy.yaml');
  writeFileSync(file, POLICY_A);
  stores = [];
  logs = [];
  catalogCalls = 0;
});

afterEach(() => {
  for (const s of stores) s.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('open', () => {
  it('loads the policy and the catalog as version 1', async () => {
    const store = await open();
    expect(store.version).toBe(1);
    expect(store.current.policy.version).toBe(1);
    expect([...store.current.policy.roles.keys()]).toEqual(['analyst', 'ops']);
    expect(store.current.catalog.database).toBe('db1');
    expect(Object.isFrozen(store.current)).toBe(true);
    expect(logs).toContainEqual(expect.objectContaining({ level: 'info', msg: 'policy loaded' }));
  });

  it('fails with every issue when the first load is invalid', async () => {
    writeFileSync(file, INVALID);
    const err = await open().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyLoadError);
    const issues = (err as PolicyLoadError).issues.map((i) => i.path);
    expect(issues).toEqual(['roles.analyst.maxRows', 'roles.analyst.relations[0]']);
    expect((err as Error).message).toContain('policy.yaml:3: roles.analyst.maxRows');
  });

  it('fails when the file is missing or the catalog cannot be read', async () => {
    unlinkSync(file);
    await expect(open()).rejects.toBeInstanceOf(PolicyLoadError);
    writeFileSync(file, POLICY_A);
    await expect(
      open({
        loadCatalog: async () => {
          throw new Error('upstream down');
        },
      }),
    ).rejects.toThrow('upstream down');
  });

  it('passes the compiled policy to loadCatalog and runs the privilege check', async () => {
    const seen: string[][] = [];
    await open({
      loadCatalog: async (policy) => {
        seen.push([...policy.roles.keys()]);
        return emptyCatalog();
      },
      checkPrivileges: async () => ['upstream user "postgres" is a superuser'],
    });
    expect(seen).toEqual([['analyst', 'ops']]);
    expect(logs).toContainEqual(
      expect.objectContaining({ level: 'warn', msg: 'upstream user "postgres" is a superuser' }),
    );
  });
});

describe('reload', () => {
  it('signal and api reloads swap policy and catalog together and bump the version', async () => {
    const store = await open();
    const first = store.current;
    writeFileSync(file, POLICY_B);
    const r = await store.reload('signal');
    expect(r).toEqual({ ok: true, version: 2, changed: true });
    expect(store.current).not.toBe(first);
    expect(store.current.policy.version).toBe(2);
    expect(store.current.catalog.database).toBe('db2');
    expect([...store.current.policy.roles.keys()]).toEqual(['analyst', 'auditor']);
    // A held reference is a consistent snapshot: the old pair is untouched.
    expect(first.policy.version).toBe(1);
    expect(first.catalog.database).toBe('db1');
    // SIGHUP on an unchanged file still re-reads the catalog (the way to pick up DDL) and bumps the version.
    expect(await store.reload('api')).toEqual({ ok: true, version: 3, changed: true });
    expect(store.current.catalog.database).toBe('db3');
  });

  it('an invalid file is logged and the last good policy stays', async () => {
    const store = await open();
    const good = store.current;
    writeFileSync(file, INVALID);
    const r = await store.reload('signal');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.issues.map((i) => i.path)).toEqual(['roles.analyst.maxRows', 'roles.analyst.relations[0]']);
    expect(store.current).toBe(good);
    expect(store.version).toBe(1);
    const logged = logs.find((l) => l.level === 'error');
    expect(logged?.msg).toMatch(/keeping the current policy/);
    expect(JSON.stringify(logged?.fields)).toContain('roles.analyst.maxRows');
    // A missing file is the same kind of failure.
    unlinkSync(file);
    expect((await store.reload('api')).ok).toBe(false);
    expect(store.current).toBe(good);
    // Fixing the file recovers, and the version continues from the last good one.
    writeFileSync(file, POLICY_B);
    expect(await store.reload('api')).toMatchObject({ ok: true, version: 2 });
  });

  it('versions increase monotonically across reloads, failures and catalog refreshes', async () => {
    const store = await open();
    const versions = [store.version];
    for (const text of [POLICY_B, INVALID, POLICY_A, POLICY_A]) {
      writeFileSync(file, text);
      await store.reload('api');
      versions.push(store.version);
      await store.refreshCatalog();
      versions.push(store.version);
    }
    for (let i = 1; i < versions.length; i++) expect(versions[i]!).toBeGreaterThanOrEqual(versions[i - 1]!);
    expect(versions).toEqual([1, 2, 3, 3, 4, 5, 6, 7, 8]);
  });

  it('concurrent reloads are serialized, in call order; requests made while one runs share one later reload', async () => {
    let running = 0;
    let maxRunning = 0;
    const store = await open({
      loadCatalog: async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await sleep(20);
        running--;
        return emptyCatalog();
      },
    });
    const results = await Promise.all([
      store.reload('api'),
      store.refreshCatalog(),
      store.reload('signal'),
      store.reload('api'),
    ]);
    expect(maxRunning).toBe(1);
    // The signal and the second api request arrived while the first reload ran: one reload after it covers both.
    expect(results.map((r) => (r.ok ? r.version : -1))).toEqual([2, 3, 4, 4]);
    expect(store.version).toBe(4);
  });

  it('a catalog failure on reload still applies the new policy, with the previous catalog', async () => {
    let fail = false;
    const store = await open({
      loadCatalog: async () => {
        if (fail) throw new Error('upstream down');
        return emptyCatalog('first');
      },
    });
    fail = true;
    writeFileSync(file, POLICY_B);
    expect(await store.reload('api')).toMatchObject({ ok: true, version: 2 });
    expect(store.current.policy.roles.has('ops')).toBe(false);
    expect(store.current.catalog.database).toBe('first');
    expect(logs).toContainEqual(
      expect.objectContaining({ level: 'warn', msg: expect.stringContaining('catalog reload failed') }),
    );
    // refreshCatalog reports its failure and changes nothing.
    const r = await store.refreshCatalog();
    expect(r).toMatchObject({ ok: false, issues: [{ path: 'catalog' }] });
    expect(store.version).toBe(2);
  });

  it('refreshCatalog keeps the roles and bumps the version so cached decisions expire', async () => {
    const store = await open();
    const roles = store.current.policy.roles;
    expect(await store.refreshCatalog()).toEqual({ ok: true, version: 2, changed: true });
    expect(store.current.policy.roles).toBe(roles);
    expect(store.current.policy.version).toBe(2);
    expect(store.current.catalog.database).toBe('db2');
  });
});

describe('bursts and partial writes', () => {
  it('a burst of 50 reload requests is at most two reloads, and every caller gets a result', async () => {
    const store = await open();
    writeFileSync(file, POLICY_B);
    const results = await Promise.all(Array.from({ length: 50 }, () => store.reload('signal')));
    expect(results.every((r) => r.ok)).toBe(true);
    // One reload ran at once, every later request joined the one pending reload: two catalog reads beyond startup.
    expect(catalogCalls).toBe(1 + 2);
    expect(store.version).toBe(3);
    expect(logs.filter((l) => l.msg === 'policy reloaded')).toHaveLength(2);
  });

  it('a file rewritten in place in two steps is applied only once complete (read until it settles)', async () => {
    const store = await open({ watch: true, settleMs: 300 });
    const seen: CompiledPolicy[] = [];
    store.onChange((c) => seen.push(c.policy));
    // The new policy adds a role and keeps the denied column; its first half is valid YAML without deniedColumns.
    const full = POLICY_A + '  auditor:\n    relations: [public.audit]\n';
    const cut = full.indexOf('    deniedColumns');
    const fd = openSync(file, 'w');
    try {
      writeSync(fd, full.slice(0, cut));
      await sleep(150);
      writeSync(fd, full.slice(cut));
    } finally {
      closeSync(fd);
    }
    await waitFor(() => store.current.policy.roles.has('auditor'), 'the complete file applied');
    await sleep(400);
    // Every policy ever applied is the complete one: the half without deniedColumns never was.
    expect(seen.length).toBeGreaterThanOrEqual(1);
    for (const p of seen)
      expect([...(p.roles.get('analyst')?.deniedColumns.get('public.customers') ?? [])]).toEqual(['ssn']);
    expect(store.version).toBe(2);
  });

  it('a file that keeps changing is not applied until it settles', async () => {
    const store = await open({ settleMs: 50, settleMaxMs: 300 });
    let n = 0;
    const writer = setInterval(() => writeFileSync(file, POLICY_B + `# ${n++}\n`), 20);
    try {
      const r = await store.reload('api');
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.issues[0]?.message).toMatch(/kept changing/);
      expect(store.version).toBe(1);
    } finally {
      clearInterval(writer);
    }
    expect(await store.reload('api')).toMatchObject({ ok: true, version: 2 });
  });
});

describe('onChange', () => {
  it('reports added, removed and changed roles; a throwing listener is logged, not fatal', async () => {
    const store = await open();
    const changes: PolicyChange[] = [];
    store.onChange(() => {
      throw new Error('listener bug');
    });
    const off = store.onChange((c) => changes.push(c));
    writeFileSync(file, POLICY_B);
    await store.reload('api');
    expect(changes).toHaveLength(1);
    expect(changes[0]).toMatchObject({
      reason: 'api',
      version: 2,
      previousVersion: 1,
      addedRoles: ['auditor'],
      removedRoles: ['ops'],
      changedRoles: ['analyst'],
    });
    expect(changes[0]?.policy).toBe(store.current.policy);
    expect(logs).toContainEqual(expect.objectContaining({ level: 'error', msg: 'policy change listener failed' }));
    await store.refreshCatalog();
    expect(changes[1]).toMatchObject({ reason: 'catalog', addedRoles: [], removedRoles: [], changedRoles: [] });
    off();
    await store.reload('api');
    expect(changes).toHaveLength(2);
  });
});

describe('file watching', () => {
  it('reloads after an in-place write, debounced to one reload per burst', async () => {
    const store = await open({ watch: true });
    const versions: number[] = [];
    store.onChange((c) => versions.push(c.version));
    // Several writes in quick succession (an editor saving in steps) give one reload of the final text.
    writeFileSync(file, POLICY_A.replace('maxRows: 100', 'maxRows: 5'));
    writeFileSync(file, POLICY_A.replace('maxRows: 100', 'maxRows: 6'));
    writeFileSync(file, POLICY_B);
    await waitFor(() => store.version === 2, 'the reload');
    await sleep(150);
    expect(versions).toEqual([2]);
    expect(store.current.policy.roles.has('auditor')).toBe(true);
  });

  it('reloads when an editor replaces the file by rename, and keeps watching the new file', async () => {
    const store = await open({ watch: true });
    const tmp = path.join(dir, '.policy.yaml.swp');
    writeFileSync(tmp, POLICY_B);
    renameSync(tmp, file);
    await waitFor(() => store.version === 2, 'the reload after rename');
    expect(store.current.policy.roles.has('auditor')).toBe(true);
    // The old inode is gone; an in-place write to the new file must still be seen.
    await sleep(50);
    writeFileSync(file, POLICY_A);
    await waitFor(() => store.version === 3, 'the reload after writing the replaced file');
    expect(store.current.policy.roles.has('ops')).toBe(true);
  });

  it('survives delete and re-create: the deletion is an error, the re-creation a reload', async () => {
    const store = await open({ watch: true });
    unlinkSync(file);
    await waitFor(() => logs.some((l) => l.level === 'error'), 'the failed reload');
    expect(store.version).toBe(1);
    writeFileSync(file, POLICY_B);
    await waitFor(() => store.version === 2, 'the reload after re-creation');
  });

  it('an invalid save keeps the last good policy; the next good save applies', async () => {
    const store = await open({ watch: true });
    writeFileSync(file, INVALID);
    await waitFor(() => logs.some((l) => l.level === 'error'), 'the failed reload');
    expect(store.version).toBe(1);
    writeFileSync(file, POLICY_B);
    await waitFor(() => store.version === 2, 'the good reload');
  });

  it('touching the file without changing it does not bump the version', async () => {
    const store = await open({ watch: true });
    writeFileSync(file, POLICY_A);
    await sleep(200);
    expect(store.version).toBe(1);
    expect(catalogCalls).toBe(1);
  });

  it('ignores other files in the directory', async () => {
    const store = await open({ watch: true });
    writeFileSync(path.join(dir, 'other.yaml'), POLICY_B);
    await sleep(150);
    expect(store.version).toBe(1);
  });

  it('close stops the watchers: no handles left, no reloads after', async () => {
    const before = await fsWatchers();
    const store = await open({ watch: true });
    expect(await fsWatchers()).toBe(before + 2);
    // Close with a debounce pending: the timer must not fire a reload.
    writeFileSync(file, POLICY_B);
    await sleep(5);
    store.close();
    store.close();
    expect(await fsWatchers()).toBe(before);
    await sleep(150);
    expect(store.version).toBe(1);
    // Re-arming after a rename must not leak either.
    const again = await open({ watch: true });
    const tmp = path.join(dir, 'tmp.yaml');
    writeFileSync(tmp, POLICY_A);
    renameSync(tmp, file);
    await waitFor(() => again.version === 2, 'the reload after rename');
    again.close();
    expect(await fsWatchers()).toBe(before);
  });
});
