// A revocation file rewritten in place or appended to in parts, through the running proxy: a revoked token is refused at login throughout the write, and only the complete file is applied.
import { closeSync, mkdtempSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts';
import { identityFactory } from '../helpers/revocation.ts';
import { until } from '../helpers/until.ts';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

const settleUser = identityFactory({ sub: 'settle-user' });
const id = (jti: string) => settleUser({ jti });

/** One login with `token`: 'ok', or the SQLSTATE it was refused with (and the message, for the reason shown). */
async function login(tp: TestProxy, token: string): Promise<{ code: string; message: string }> {
  const c = new pg.Client(tp.pgConfig(token));
  try {
    await c.connect();
    await c.query('SELECT 1');
    return { code: 'ok', message: '' };
  } catch (err) {
    const e = err as { code?: string; message: string };
    return { code: e.code ?? 'error', message: e.message };
  } finally {
    await c.end().catch(() => {});
  }
}

/** Logs in with `token` over and over until `stop()` resolves; returns every distinct outcome. */
function probeLogins(tp: TestProxy, token: string): { stop: () => Promise<Set<string>> } {
  const seen = new Set<string>();
  let running = true;
  const loop = (async () => {
    while (running) seen.add((await login(tp, token)).code);
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return seen;
    },
  };
}

async function readErrors(tp: TestProxy): Promise<number> {
  const m = await tp.proxy.metrics.registry.getSingleMetric('pgwarden_revocation_reads_total')?.get();
  return (m?.values ?? [])
    .filter((v) => v.labels['source'] === 'file' && v.labels['result'] === 'error')
    .reduce((n, v) => n + v.value, 0);
}

async function fileUp(tp: TestProxy): Promise<number | undefined> {
  const m = await tp.proxy.metrics.registry.getSingleMetric('pgwarden_revocation_listener_up')?.get();
  return m?.values.find((v) => v.labels['source'] === 'file')?.value;
}

/** Writes `text` to `file` in place (truncate, then write) in two steps `gapMs` apart, cut at `cut`. */
async function writeInTwoSteps(file: string, text: string, cut: number, gapMs: number): Promise<void> {
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, text.slice(0, cut));
    await pause(gapMs);
    writeSync(fd, text.slice(cut));
  } finally {
    closeSync(fd);
  }
}

describe('a YAML revocation file rewritten in place', () => {
  let tp: TestProxy;
  let dir: string;
  let file: string;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-settle-'));
    file = path.join(dir, 'revocations.yaml');
    writeFileSync(
      file,
      'revoked:\n  - { jti: jti-old-1 }\n  - { jti: jti-to-remove }\n  - { jti: jti-revoked, reason: leaked }\n',
    );
    tp = await startTestProxy({ deps: { watchPolicy: true }, config: { revocation: { file, table: undefined } } });
  });
  afterAll(async () => {
    await tp?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps refusing a revoked token while the first half (without it) is on disk, then applies the complete file', async () => {
    const revoked = await tp.token({ sub: 'settle-user', jti: 'jti-revoked' });
    expect((await login(tp, revoked)).code).toBe('28000');
    // The new list drops jti-to-remove and adds jti-added; cut before jti-revoked, its first half is a valid list without it.
    const full =
      'revoked:\n  - { jti: jti-old-1 }\n  - { jti: jti-added, reason: rotated }\n  - { jti: jti-revoked, reason: leaked }\n';
    const cut = full.indexOf('  - { jti: jti-revoked');
    expect(cut).toBeGreaterThan(0);
    const errorsBefore = await readErrors(tp);
    const probe = probeLogins(tp, revoked);
    // 400 ms: longer than the watcher's debounce (100 ms), shorter than the settle time (500 ms).
    await writeInTwoSteps(file, full, cut, 400);
    // The removal is applied only with the settled file.
    await until(() => tp.proxy.revocations.match(id('jti-to-remove')) === undefined, 5_000);
    const seen = await probe.stop();
    expect([...seen]).toEqual(['28000']);
    expect(tp.proxy.revocations.match(id('jti-revoked'))).toEqual({ reason: 'leaked' });
    expect(tp.proxy.revocations.match(id('jti-added'))).toEqual({ reason: 'rotated' });
    const added = await login(tp, await tp.token({ sub: 'settle-user', jti: 'jti-added' }));
    expect(added.code).toBe('28000');
    expect(added.message).toMatch(/rotated/);
    expect((await login(tp, await tp.token({ sub: 'settle-user', jti: 'jti-to-remove' }))).code).toBe('ok');
    expect(await readErrors(tp)).toBe(errorsBefore);
    expect(await fileUp(tp)).toBe(1);
  });

  it('a file that never settles keeps the entries in force, warns and counts a failed read; its last version applies once it stops', async () => {
    writeFileSync(path.join(dir, 'next.yaml'), 'revoked:\n  - { jti: jti-keep, reason: kept }\n');
    renameSync(path.join(dir, 'next.yaml'), file);
    await until(
      () =>
        tp.proxy.revocations.match(id('jti-keep')) !== undefined &&
        tp.proxy.revocations.match(id('jti-old-1')) === undefined,
      5_000,
    );
    const kept = await tp.token({ sub: 'settle-user', jti: 'jti-keep' });
    const errorsBefore = await readErrors(tp);
    const logsBefore = tp.logs.length;
    const probe = probeLogins(tp, kept);
    // Rewritten in place every 200 ms, each version without jti-keep, for longer than the settle bound (10 s).
    const started = Date.now();
    for (let i = 0; Date.now() - started < 11_500; i++) {
      writeFileSync(file, `revoked:\n  - { jti: jti-churn-${i % 2} }\n`);
      await pause(200);
    }
    const during = await readErrors(tp);
    const warned = tp.logs.slice(logsBefore).some((l) => l.includes('did not settle'));
    const upDuring = await fileUp(tp);
    const seen = await probe.stop();
    expect([...seen]).toEqual(['28000']);
    expect(during).toBeGreaterThan(errorsBefore);
    expect(warned).toBe(true);
    expect(upDuring).toBe(0);
    // Writing stopped: the reload still queued reads the last version, which now settles.
    await until(() => tp.proxy.revocations.match(id('jti-keep')) === undefined, 5_000);
    expect(
      tp.proxy.revocations.match(id('jti-churn-0')) ?? tp.proxy.revocations.match(id('jti-churn-1')),
    ).toBeDefined();
    await until(async () => (await fileUp(tp)) === 1, 2_000);
  }, 30_000);
});

describe('a JSON Lines revocation file appended to in two parts', () => {
  let tp: TestProxy;
  let dir: string;
  let file: string;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-settle-'));
    file = path.join(dir, 'revocations.jsonl');
    writeFileSync(file, '{"jti":"jti-first"}\n');
    tp = await startTestProxy({ deps: { watchPolicy: true }, config: { revocation: { file, table: undefined } } });
  });
  afterAll(async () => {
    await tp?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('applies the line once its newline is written, never the half, and never counts the half as an error', async () => {
    const token = await tp.token({ sub: 'settle-user', jti: 'jti-appended' });
    expect((await login(tp, token)).code).toBe('ok');
    const errorsBefore = await readErrors(tp);
    const logsBefore = tp.logs.length;
    const fd = openSync(file, 'a');
    try {
      writeSync(fd, '{"jti":"jti-appended","reas');
      // Longer than the debounce: the half line has been read (and left for later) by now.
      await pause(400);
      expect((await login(tp, token)).code).toBe('ok');
      expect(await fileUp(tp)).toBe(1);
      writeSync(fd, 'on":"appended in two parts"}\n');
    } finally {
      closeSync(fd);
    }
    await until(() => tp.proxy.revocations.match(id('jti-appended')) !== undefined, 5_000);
    const refused = await login(tp, token);
    expect(refused.code).toBe('28000');
    expect(refused.message).toMatch(/appended in two parts/);
    expect(tp.proxy.revocations.match(id('jti-first'))).toBeDefined();
    expect(await readErrors(tp)).toBe(errorsBefore);
    expect(tp.logs.slice(logsBefore).some((l) => l.includes('invalid'))).toBe(false);
  });
});
