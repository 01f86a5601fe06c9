// File revocation list: matching, expiry, hot reload (in place and rename-replace), last good list on bad input, atomic revoke(), the CLI.
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseRevocationText, revoke, RevocationFileError, RevocationList } from '../../../proxy/revocation/file.ts';
import { combineRevocations, revokedSessionError, type RevocationChange } from '../../../proxy/revocation/source.ts';
import { revokeCommand, type RevokeLoadConfig } from '../../../proxy/cli/revoke.ts';
import { until } from '../../helpers/until.ts';
import { identityFactory } from '../../helpers/revocation.ts';

const id = identityFactory({ sub: 'alice', agent: 'bot-1', jti: 'jti-1' });

let dir: string;
let file: string;
let lists: RevocationList[];
let logs: { level: string; msg: string }[];

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-revoke-'));
  file = path.join(dir, 'revoked.yaml');
  lists = [];
  logs = [];
});

afterEach(() => {
  for (const l of lists) l.close();
  rmSync(dir, { recursive: true, force: true });
});

async function open(watch = true): Promise<RevocationList> {
  const l = await RevocationList.open({ file, watch, debounceMs: 30, log: (level, msg) => logs.push({ level, msg }) });
  lists.push(l);
  return l;
}

describe('parsing and matching', () => {
  it('matches by jti, sub and agent, with the reason or a default', async () => {
    writeFileSync(
      file,
      `revoked:\n  - { jti: jti-1, reason: leaked in CI logs }\n  - { sub: mallory }\n  - { agent: rogue-bot, reason: misbehaving }\n`,
    );
    const l = await open(false);
    expect(l.match(id())).toEqual({ reason: 'leaked in CI logs' });
    expect(l.match(id({ jti: 'other', sub: 'mallory' }))).toEqual({ reason: 'sub revoked' });
    expect(l.match(id({ jti: undefined, agent: 'rogue-bot' }))).toEqual({ reason: 'misbehaving' });
    expect(l.match(id({ jti: 'other', agent: undefined }))).toBeUndefined();
    // An identity without an agent never matches an agent entry.
    expect(l.match(id({ jti: undefined, agent: undefined, sub: 'bob' }))).toBeUndefined();
  });

  it('ignores expired entries (and counts an entry as expired at its expiresAt)', async () => {
    writeFileSync(file, JSON.stringify({ revoked: [{ jti: 'jti-1', expiresAt: '2030-01-01T00:00:00Z' }] }));
    const l = await open(false);
    const at = Date.parse('2030-01-01T00:00:00Z');
    expect(l.match(id(), at - 1)).toBeDefined();
    expect(l.match(id(), at)).toBeUndefined();
    expect(l.match(id(), at + 1)).toBeUndefined();
  });

  it('accepts a bare list, JSON, and unquoted YAML timestamps', () => {
    const r = parseRevocationText(`- sub: a\n  expiresAt: 2030-01-01T00:00:00Z\n`);
    expect(r).toEqual({ ok: true, entries: [{ sub: 'a', expiresAt: '2030-01-01T00:00:00.000Z' }] });
    expect(parseRevocationText('[{"agent":"x"}]')).toEqual({ ok: true, entries: [{ agent: 'x' }] });
    expect(parseRevocationText('')).toEqual({ ok: true, entries: [] });
  });

  it('reports every invalid entry with its position', () => {
    const r = parseRevocationText(
      `revoked:\n  - { jti: a, sub: b }\n  - { reason: none }\n  - { subject: typo }\n  - { jti: c, expiresAt: tomorrow }\n  - { jti: '' }\n`,
    );
    expect(r.ok).toBe(false);
    const issues = r.ok ? [] : r.issues;
    expect(issues.join('\n')).toMatch(/revoked\[0\]: must have exactly one of jti, sub, agent \(has jti, sub\)/);
    expect(issues.join('\n')).toMatch(/revoked\[1\]: must have exactly one/);
    expect(issues.join('\n')).toMatch(/revoked\[2\]\.subject: unknown field/);
    expect(issues.join('\n')).toMatch(/revoked\[3\]\.expiresAt: must be an ISO 8601/);
    expect(issues.join('\n')).toMatch(/revoked\[4\]\.jti: must be a non-empty string/);
  });

  it('a missing file at startup is an empty list; an invalid one refuses to start', async () => {
    const l = await open(false);
    expect(l.entries).toHaveLength(0);
    expect(logs.some((x) => x.level === 'warn' && /does not exist yet/.test(x.msg))).toBe(true);
    writeFileSync(file, 'revoked: [ { nope: 1 } ]');
    await expect(RevocationList.open({ file, watch: false })).rejects.toBeInstanceOf(RevocationFileError);
  });
});

describe('reloading', () => {
  it('reloads on an in-place change and tells listeners what was added and removed', async () => {
    writeFileSync(file, 'revoked:\n  - { jti: jti-1 }\n');
    const l = await open();
    const changes: RevocationChange[] = [];
    l.onChange((c) => changes.push(c));
    writeFileSync(file, 'revoked:\n  - { sub: alice, reason: left the company }\n');
    await until(() => changes.length > 0);
    expect(changes[0]).toEqual({
      source: 'file',
      entries: 1,
      added: [{ sub: 'alice', reason: 'left the company' }],
      removed: [{ jti: 'jti-1' }],
    });
    expect(l.match(id({ jti: 'x' }))).toEqual({ reason: 'left the company' });
  });

  it('follows a rename-replace (editors, revoke()) and keeps watching the new file', async () => {
    writeFileSync(file, 'revoked: []\n');
    const l = await open();
    let n = 0;
    l.onChange(() => n++);
    const tmp = path.join(dir, 'next.yaml');
    writeFileSync(tmp, 'revoked:\n  - { agent: bot-1 }\n');
    renameSync(tmp, file);
    await until(() => n === 1);
    expect(l.match(id({ jti: undefined }))).toBeDefined();
    // The watcher moved to the new inode: an in-place write to it is seen too.
    writeFileSync(file, 'revoked:\n  - { agent: bot-1 }\n  - { sub: bob }\n');
    await until(() => n === 2);
    expect(l.match(id({ sub: 'bob', agent: undefined, jti: undefined }))).toBeDefined();
  });

  it('an invalid file keeps the last good list and logs; a vanished file too', async () => {
    writeFileSync(file, 'revoked:\n  - { jti: jti-1 }\n');
    const l = await open();
    writeFileSync(file, 'revoked:\n  - { jti: jti-1\n');
    await until(() => logs.some((x) => x.level === 'error' && /invalid; keeping the current list/.test(x.msg)));
    expect(l.match(id())).toBeDefined();
    rmSync(file);
    await until(() => logs.some((x) => x.level === 'error' && /missing; keeping the current list/.test(x.msg)));
    expect(l.match(id())).toBeDefined();
    // Back with good content: picked up, and an empty list does clear.
    writeFileSync(file, 'revoked: []\n');
    await until(() => l.match(id()) === undefined);
  });

  it('reload() (SIGHUP) works without a watcher and reports the result', async () => {
    writeFileSync(file, 'revoked: []\n');
    const l = await open(false);
    writeFileSync(file, 'revoked: [ { jti: jti-1 } ]\n');
    expect(await l.reload()).toEqual({ ok: true, changed: true, entries: 1 });
    expect(await l.reload()).toEqual({ ok: true, changed: false, entries: 1 });
    writeFileSync(file, 'revoked: [ { jti: } ]\n');
    expect((await l.reload()).ok).toBe(false);
    expect(l.match(id())).toBeDefined();
  });
});

describe('revoke()', () => {
  it('creates the file, then appends, keeping comments and earlier entries; no temp or lock files remain', async () => {
    await revoke(file, { jti: 'j1', reason: 'first' });
    writeFileSync(file, `# managed by the on-call runbook\n${readFileSync(file, 'utf8')}`);
    await revoke(file, { sub: 'bob', expiresAt: '2031-05-01T00:00:00Z' });
    const text = readFileSync(file, 'utf8');
    expect(text).toContain('# managed by the on-call runbook');
    const parsed = parseRevocationText(text);
    expect(parsed).toEqual({
      ok: true,
      entries: [
        { jti: 'j1', reason: 'first' },
        { sub: 'bob', expiresAt: '2031-05-01T00:00:00.000Z' },
      ],
    });
    expect(readdirSync(dir)).toEqual(['revoked.yaml']);
  });

  it('keeps a .json file JSON', async () => {
    const jf = path.join(dir, 'revoked.json');
    await revoke(jf, { agent: 'a1' });
    await revoke(jf, { jti: 'j2' });
    expect(JSON.parse(readFileSync(jf, 'utf8'))).toEqual({ revoked: [{ agent: 'a1' }, { jti: 'j2' }] });
  });

  it('concurrent appends lose nothing (lock + temp + rename)', async () => {
    await Promise.all(Array.from({ length: 20 }, (_, i) => revoke(file, { jti: `j${i}` })));
    const parsed = parseRevocationText(readFileSync(file, 'utf8'));
    expect(parsed.ok && parsed.entries.map((e) => e.jti).sort()).toEqual(
      Array.from({ length: 20 }, (_, i) => `j${i}`).sort(),
    );
  });

  it('refuses an invalid entry and will not overwrite an invalid file', async () => {
    await expect(revoke(file, { jti: 'a', sub: 'b' })).rejects.toThrow(/exactly one of jti, sub, agent/);
    writeFileSync(file, 'revoked: [ { jti: \n');
    const before = readFileSync(file, 'utf8');
    await expect(revoke(file, { jti: 'x' })).rejects.toBeInstanceOf(RevocationFileError);
    expect(readFileSync(file, 'utf8')).toBe(before);
  });

  it('a running list sees an appended revocation through the watcher', async () => {
    await revoke(file, { jti: 'other' });
    const l = await open();
    await revoke(file, { jti: 'jti-1', reason: 'incident 42' });
    await until(() => l.match(id()) !== undefined);
    expect(l.match(id())).toEqual({ reason: 'incident 42' });
  });
});

describe('helpers', () => {
  it('combineRevocations matches if any source does and forwards changes', async () => {
    writeFileSync(file, 'revoked: [ { sub: alice } ]\n');
    const l = await open(false);
    const other = { match: () => undefined, onChange: () => () => {}, close: () => {} };
    const both = combineRevocations(other, l);
    expect(both.match(id())).toEqual({ reason: 'sub revoked' });
    let fired = 0;
    both.onChange(() => fired++);
    writeFileSync(file, 'revoked: []\n');
    await l.reload();
    expect(fired).toBe(1);
    expect(both.match(id())).toBeUndefined();
  });

  it('revokedSessionError is a FATAL 57P01 naming the reason', () => {
    const e = revokedSessionError('incident 42');
    expect(e.sqlstate).toBe('57P01');
    expect(e.severity).toBe('FATAL');
    expect(e.message).toMatch(/revoked: incident 42/);
  });
});

describe('pgwarden revoke', () => {
  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    return {
      out,
      err,
      io: {
        out: (t: string) => void out.push(t),
        err: (t: string) => void err.push(t),
        now: () => Date.parse('2030-01-01T00:00:00Z'),
      },
    };
  };
  const config =
    (revocation: unknown): RevokeLoadConfig =>
    () => ({ ok: true, config: { revocation } as never });

  it('appends with --reason and --expires, relative or absolute', async () => {
    const t = io();
    expect(
      await revokeCommand(
        ['--config', 'x.yaml', '--jti', 'j1', '--reason', 'leaked', '--expires', '1h'],
        config({ file }),
        t.io,
      ),
    ).toBe(0);
    expect(
      await revokeCommand(
        ['--config', 'x.yaml', '--agent', 'bot', '--expires', '2030-02-01T00:00:00Z'],
        config({ file }),
        t.io,
      ),
    ).toBe(0);
    expect(parseRevocationText(readFileSync(file, 'utf8'))).toEqual({
      ok: true,
      entries: [
        { jti: 'j1', reason: 'leaked', expiresAt: '2030-01-01T01:00:00.000Z' },
        { agent: 'bot', expiresAt: '2030-02-01T00:00:00.000Z' },
      ],
    });
    expect(t.out.join('')).toMatch(/revoked jti "j1" in .* until 2030-01-01T01:00:00.000Z/);
  });

  it('usage errors exit 2; config problems exit 1', async () => {
    const t = io();
    expect(await revokeCommand(['--config', 'x', '--jti', 'a', '--sub', 'b'], config({ file }), t.io)).toBe(2);
    expect(await revokeCommand(['--jti', 'a'], config({ file }), t.io)).toBe(2);
    expect(await revokeCommand(['--config', 'x', '--jti', 'a', '--expires', 'soon'], config({ file }), t.io)).toBe(2);
    expect(await revokeCommand(['--config', 'x', '--jti', 'a', '--bogus'], config({ file }), t.io)).toBe(2);
    expect(await revokeCommand(['--config', 'x', '--jti', 'a'], config(undefined), t.io)).toBe(1);
    expect(
      await revokeCommand(
        ['--config', 'x', '--jti', 'a'],
        config({ table: { schema: 'pgwarden', name: 'revocations' } }),
        t.io,
      ),
    ).toBe(1);
    expect(t.err.join('')).toMatch(/INSERT INTO it instead/);
    const bad: RevokeLoadConfig = () => ({
      ok: false,
      issues: [{ path: 'revocation.file', message: 'is not a file' }],
    });
    expect(await revokeCommand(['--config', 'x', '--jti', 'a'], bad, t.io)).toBe(1);
    expect(t.err.join('')).toMatch(/revocation.file: is not a file/);
    expect(existsSync(file)).toBe(false);
  });
});
