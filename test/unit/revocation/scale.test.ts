// Revocations at scale, file side: the compact index (merge, mark and sweep, diff), JSON Lines files read in chunks and
// from the appended bytes only, large YAML parsed off the loop, reload bursts coalesced, revocation metrics.
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createMetrics, registerRevocationMetrics } from '../../../proxy/metrics.ts';
import {
  parseRevocationLines,
  revoke,
  RevocationFileError,
  RevocationIndex,
  RevocationList,
} from '../../../proxy/revocation/file.ts';
import type { RevocationChange, RevocationReadInfo } from '../../../proxy/revocation/source.ts';
import { until } from '../../helpers/until.ts';
import { identityFactory } from '../../helpers/revocation.ts';

const id = identityFactory({ sub: 'alice' });

let dir: string;
let lists: RevocationList[];
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-revoke-scale-'));
  lists = [];
});
afterEach(() => {
  for (const l of lists) l.close();
  rmSync(dir, { recursive: true, force: true });
});

async function open(file: string, reads: RevocationReadInfo[] = []): Promise<RevocationList> {
  const l = await RevocationList.open({ file, watch: false, onRead: (r) => reads.push(r) });
  lists.push(l);
  return l;
}

const line = (e: object) => `${JSON.stringify(e)}\n`;
const jtiLines = (from: number, to: number, extra: object = {}) => {
  let s = '';
  for (let i = from; i < to; i++) s += line({ jti: `jti-${i}`, ...extra });
  return s;
};

describe('RevocationIndex', () => {
  it('several revocations of one identifier: in force as long as the longest, whose reason is shown', () => {
    const x = new RevocationIndex([
      { sub: 'bob', reason: 'short', expiresAt: '2030-01-01T00:00:00Z' },
      { sub: 'bob', reason: 'long', expiresAt: '2031-01-01T00:00:00Z' },
      { sub: 'bob', reason: 'shorter', expiresAt: '2029-01-01T00:00:00Z' },
    ]);
    expect(x.size).toBe(1);
    expect(x.match(id({ sub: 'bob' }), Date.parse('2029-06-01T00:00:00Z'))).toEqual({ reason: 'long' });
    expect(x.match(id({ sub: 'bob' }), Date.parse('2030-06-01T00:00:00Z'))).toEqual({ reason: 'long' });
    expect(x.match(id({ sub: 'bob' }), Date.parse('2031-01-01T00:00:00Z'))).toBeUndefined();
    // No expiry outlasts any date.
    x.add({ sub: 'bob' });
    expect(x.match(id({ sub: 'bob' }), Date.parse('2099-01-01T00:00:00Z'))).toEqual({ reason: 'sub revoked' });
  });

  it('a full read replaces what it sees, sweeps what it did not see and what expired, and keeps all until the sweep', async () => {
    const now = Date.parse('2030-01-01T00:00:00Z');
    const x = new RevocationIndex([
      { jti: 'kept', reason: 'old reason' },
      { jti: 'gone' },
      { agent: 'expired', expiresAt: '2029-01-01T00:00:00Z' },
    ]);
    const gen = x.beginFullRead();
    expect(x.addKey('jti', 'kept', Number.POSITIVE_INFINITY, 'new reason')).toBe(true);
    expect(x.addKey('sub', 'new', Number.POSITIVE_INFINITY, undefined)).toBe(true);
    // Until the sweep, an identifier the read has not (yet) seen is still revoked: the old index keeps answering.
    expect(x.match(id({ jti: 'gone' }), now)).toEqual({ reason: 'jti revoked' });
    const removed = await x.sweep(now, gen);
    expect(removed).toEqual({ count: 1, listed: [{ jti: 'gone' }] });
    expect(x.match(id({ jti: 'gone' }), now)).toBeUndefined();
    expect(x.match(id({ jti: 'kept' }), now)).toEqual({ reason: 'new reason' });
    expect(x.match(id({ jti: 'x', sub: 'new' }), now)).toEqual({ reason: 'sub revoked' });
    expect(x.size).toBe(2);
    // An abandoned full read (the source failed midway) removes nothing.
    const failed = x.beginFullRead();
    x.abandonFullRead(failed);
    await x.sweep(now, failed);
    expect(x.size).toBe(2);
    // A full read superseded by a newer one (a reconnect) sweeps nothing it did not see; the newer one does.
    const older = x.beginFullRead();
    const newer = x.beginFullRead();
    x.addKey('jti', 'kept', Number.POSITIVE_INFINITY, 'new reason');
    x.abandonFullRead(older);
    await x.sweep(now, older);
    expect(x.size).toBe(2);
    expect((await x.sweep(now, newer)).listed).toEqual([{ sub: 'new' }]);
    expect(x.size).toBe(1);
  });

  it('diff lists what was added, changed and removed, with true counts beyond the listed ones', async () => {
    const a = new RevocationIndex([{ jti: 'same' }, { jti: 'changed', reason: 'a' }, { sub: 'removed' }]);
    const b = new RevocationIndex([{ jti: 'same' }, { jti: 'changed', reason: 'b' }, { agent: 'added' }]);
    const d = await a.diff(b);
    expect(d.added.listed).toEqual([{ jti: 'changed', reason: 'b' }, { agent: 'added' }]);
    expect(d.removed.listed).toEqual([{ jti: 'changed', reason: 'a' }, { sub: 'removed' }]);
    const big = new RevocationIndex(Array.from({ length: 1500 }, (_, i) => ({ jti: `j${i}` })));
    const d2 = await new RevocationIndex().diff(big);
    expect(d2.added.count).toBe(1500);
    expect(d2.added.listed).toHaveLength(1000);
  });
});

describe('JSON Lines files', () => {
  it('a 50,000-line file is read in chunks: every entry enforced, and the event loop ran in between', async () => {
    const file = path.join(dir, 'revoked.jsonl');
    writeFileSync(
      file,
      `# comment lines and blank lines are skipped\n\n${jtiLines(0, 50_000, { reason: 'leaked' })}${line({ agent: 'bot', expiresAt: '2099-01-01T00:00:00Z' })}`,
    );
    let turns = 0;
    let spinning = true;
    const spin = () => {
      turns++;
      if (spinning) setImmediate(spin);
    };
    setImmediate(spin);
    const l = await open(file);
    spinning = false;
    expect(l.size).toBe(50_001);
    for (const i of [0, 1, 24_999, 49_999]) expect(l.match(id({ jti: `jti-${i}` }))).toEqual({ reason: 'leaked' });
    expect(l.match(id({ jti: 'jti-50000' }))).toBeUndefined();
    expect(l.match(id({ agent: 'bot' }))).toEqual({ reason: 'agent revoked' });
    // Not a timing assertion: the parse yielded many times (a single synchronous parse would give one turn).
    expect(turns).toBeGreaterThan(5);
  });

  it('the fast path for plain lines indexes exactly what validateEntry accepts', async () => {
    const file = path.join(dir, 'revoked.jsonl');
    const text = [
      '{"jti":"a","sub":null,"agent":null}',
      '{"jti":"b","reason":5}',
      '{"sub":"c","expiresAt":"2099-01-01"}',
      '{"agent":"d","reason":"   ","expiresAt":"2099-01-01T00:00:00.123456Z"}',
      `{"jti":"e","reason":"${'r'.repeat(2_000)}"}`,
      '{"sub":"f","expiresAt":null,"reason":null}',
      '  {"jti":"g"}\r',
    ].join('\n');
    writeFileSync(file, `${text}\n`);
    const l = await open(file);
    const general = parseRevocationLines(text);
    expect(general.ok).toBe(true);
    const byKey = (es: readonly object[]) => [...es].map((e) => JSON.stringify(e)).sort();
    expect(byKey(l.entries)).toEqual(byKey(new RevocationIndex(general.ok ? general.entries : []).entries));
    expect(l.size).toBe(7);
    // Lines the fast path declines go the general way, and are refused there.
    for (const bad of [
      '{"__proto__":{"x":1},"jti":"h"}',
      '{"jti":"i","sub":"j"}',
      '{"jti":""}',
      '{"jti":"k","expiresAt":"soon"}',
      '{"jti":"l","extra":1}',
    ]) {
      writeFileSync(file, `${bad}\n`);
      expect((await l.reload()).ok, bad).toBe(false);
    }
  });

  it('a file that only grew is read from where the last read stopped; a changed prefix is read in full', async () => {
    const file = path.join(dir, 'revoked.jsonl');
    writeFileSync(file, jtiLines(0, 1000));
    const reads: RevocationReadInfo[] = [];
    const l = await open(file, reads);
    const changes: RevocationChange[] = [];
    l.onChange((c) => changes.push(c));
    appendFileSync(file, line({ sub: 'mallory', reason: 'fired' }));
    expect(await l.reload()).toEqual({ ok: true, changed: true, entries: 1001 });
    expect(reads.map((r) => r.kind)).toEqual(['full', 'incremental']);
    expect(changes).toEqual([
      { source: 'file', entries: 1001, added: [{ sub: 'mallory', reason: 'fired' }], removed: [] },
    ]);
    expect(l.match(id({ sub: 'mallory' }))).toEqual({ reason: 'fired' });
    // Nothing new: an incremental read that finds nothing.
    expect(await l.reload()).toEqual({ ok: true, changed: false, entries: 1001 });
    expect(reads.at(-1)?.kind).toBe('incremental');
    // Rewritten in place with the same inode: line 1 removed, one appended; the prefix hash differs, so a full read.
    writeFileSync(file, `${jtiLines(1, 1000)}${line({ sub: 'mallory', reason: 'fired' })}${line({ sub: 'eve' })}`);
    expect(await l.reload()).toEqual({ ok: true, changed: true, entries: 1001 });
    expect(reads.at(-1)?.kind).toBe('full');
    expect(l.match(id({ jti: 'jti-0' }))).toBeUndefined();
    expect(l.match(id({ sub: 'eve' }))).toBeDefined();
    expect(changes.at(-1)).toMatchObject({ added: [{ sub: 'eve' }], removed: [{ jti: 'jti-0' }] });
  });

  it('a line still being written is taken once its newline arrives', async () => {
    const file = path.join(dir, 'revoked.jsonl');
    writeFileSync(file, jtiLines(0, 3));
    const l = await open(file);
    appendFileSync(file, '{"jti":"half');
    expect(await l.reload()).toEqual({ ok: true, changed: false, entries: 3 });
    appendFileSync(file, '-done"}\n');
    expect(await l.reload()).toEqual({ ok: true, changed: true, entries: 4 });
    expect(l.match(id({ jti: 'half-done' }))).toBeDefined();
  });

  it('an invalid line keeps the last good list and is named by its line number; at startup it refuses', async () => {
    const file = path.join(dir, 'revoked.jsonl');
    writeFileSync(file, jtiLines(0, 3));
    const l = await open(file);
    appendFileSync(file, `${line({ jti: 'ok-1' })}{"jti": 5}\nnot json\n`);
    const r = await l.reload();
    expect(r.ok).toBe(false);
    expect(r.ok ? [] : r.issues).toEqual([
      expect.stringMatching(/^line 5\.jti: must be a non-empty string/),
      expect.stringMatching(/^line 6: not JSON/),
    ]);
    // None of the appended lines applies while the file is invalid, the valid one included.
    expect(l.match(id({ jti: 'ok-1' }))).toBeUndefined();
    expect(l.match(id({ jti: 'jti-0' }))).toBeDefined();
    expect(l.health()).toMatchObject({ source: 'file', up: false, entries: 3 });
    await expect(RevocationList.open({ file, watch: false })).rejects.toBeInstanceOf(RevocationFileError);
  });

  it('revoke() appends one line in place to a .jsonl file, which a running list reads incrementally', async () => {
    const file = path.join(dir, 'revoked.jsonl');
    await revoke(file, { jti: 'first' });
    writeFileSync(file, `${'{"jti":"no-newline"}'}`);
    await revoke(file, { sub: 'bob', reason: 'r', expiresAt: '2099-01-01T00:00:00Z' });
    expect(parseRevocationLines((await import('node:fs')).readFileSync(file, 'utf8'))).toEqual({
      ok: true,
      entries: [{ jti: 'no-newline' }, { sub: 'bob', reason: 'r', expiresAt: '2099-01-01T00:00:00.000Z' }],
    });
    const reads: RevocationReadInfo[] = [];
    const l = await RevocationList.open({ file, debounceMs: 20, onRead: (r) => reads.push(r) });
    lists.push(l);
    await revoke(file, { agent: 'rogue' });
    await until(() => l.match(id({ agent: 'rogue' })) !== undefined);
    expect(reads.at(-1)?.kind).toBe('incremental');
    appendFileSync(file, 'garbage\n');
    await expect(revoke(file, { jti: 'x' })).rejects.toBeInstanceOf(RevocationFileError);
  });
});

describe('YAML files', () => {
  it('a large YAML list is parsed off the loop and indexed in chunks, with the same validation', async () => {
    const file = path.join(dir, 'revoked.yaml');
    let text = 'revoked:\n';
    // Long reasons: past the inline-parse size with few entries (the yaml library is slow, worker or not).
    const reason = `bulk ${'x'.repeat(230)}`;
    for (let i = 0; i < 1_000; i++)
      text += `  - jti: "y-${i}"\n    reason: ${reason}\n    expiresAt: 2099-01-01T00:00:00Z\n`;
    writeFileSync(file, text);
    expect(text.length).toBeGreaterThan(256 * 1024);
    const l = await open(file);
    expect(l.size).toBe(1_000);
    expect(l.match(id({ jti: 'y-999' }))).toEqual({ reason });
    writeFileSync(file, `${text}  - { jti: 31, sub: x }\n  - jti: 0x1F\n`);
    const r = await l.reload();
    expect(r.ok).toBe(false);
    const issues = r.ok ? '' : r.issues.join('\n');
    expect(issues).toMatch(/revoked\[1000\]\.jti: must be a non-empty string/);
    expect(issues).toMatch(/revoked\[1000\]: must have exactly one of jti, sub, agent/);
    expect(issues).toMatch(/revoked\[1001\]\.jti: must be a non-empty string/);
    writeFileSync(file, `${text}oops: 1\n`);
    expect(await l.reload()).toMatchObject({ ok: false, issues: [expect.stringMatching(/oops: unknown key/)] });
    expect(l.size).toBe(1_000);
  });
});

describe('reload bursts', () => {
  it('many reloads at once are one read in flight plus one more', async () => {
    const file = path.join(dir, 'revoked.jsonl');
    writeFileSync(file, jtiLines(0, 10));
    const reads: RevocationReadInfo[] = [];
    const l = await open(file, reads);
    reads.length = 0;
    appendFileSync(file, line({ jti: 'late' }));
    const results = await Promise.all(Array.from({ length: 50 }, () => l.reload()));
    expect(reads.length).toBeLessThanOrEqual(2);
    expect(results.every((r) => r.ok)).toBe(true);
    expect(l.match(id({ jti: 'late' }))).toBeDefined();
  });
});

describe('metrics', () => {
  it('exports listener state, entries, last read and reads of each source', async () => {
    const file = path.join(dir, 'revoked.jsonl');
    writeFileSync(file, jtiLines(0, 42));
    const metrics = createMetrics({ collectDefault: false });
    const sources: RevocationList[] = [];
    const onRead = registerRevocationMetrics(metrics, () => sources.map((s) => s.health()));
    const l = await RevocationList.open({ file, watch: false, onRead });
    lists.push(l);
    sources.push(l);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/^pgwarden_revocation_listener_up\{source="file"\} 1$/m);
    expect(text).toMatch(/^pgwarden_revocation_entries\{source="file"\} 42$/m);
    expect(text).toMatch(/^pgwarden_revocation_last_read_timestamp_seconds\{source="file"\} \d+(\.\d+)?$/m);
    expect(text).toMatch(/^pgwarden_revocation_reads_total\{source="file",kind="full",result="ok"\} 1$/m);
    expect(text).toMatch(/^pgwarden_revocation_read_duration_seconds_count\{source="file",kind="full"\} 1$/m);
    writeFileSync(file, 'nope\n');
    await l.reload();
    const after = await metrics.registry.metrics();
    expect(after).toMatch(/^pgwarden_revocation_listener_up\{source="file"\} 0$/m);
    expect(after).toMatch(/^pgwarden_revocation_reads_total\{source="file",kind="full",result="error"\} 1$/m);
  });
});
