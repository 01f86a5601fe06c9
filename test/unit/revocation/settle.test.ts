// The revocation file read until settled: additions of a half-written rewrite count at once, removals only once settled, a JSON Lines rewrite cut at a line boundary lifts nothing, startup waits, a never-settling file keeps the list.
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RevocationList, type RevocationListOptions } from '../../../proxy/revocation/file.ts';
import type { RevocationChange, RevocationReadInfo } from '../../../proxy/revocation/source.ts';
import { until } from '../../helpers/until.ts';
import { identityFactory } from '../../helpers/revocation.ts';

const id = identityFactory({});
const jti = (v: string) => id({ jti: v });
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

let dir: string;
let lists: RevocationList[];
let logs: { level: string; msg: string }[];
let reads: RevocationReadInfo[];

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-settle-'));
  lists = [];
  logs = [];
  reads = [];
});

afterEach(() => {
  for (const l of lists) l.close();
  rmSync(dir, { recursive: true, force: true });
});

async function open(file: string, over: Partial<RevocationListOptions> = {}): Promise<RevocationList> {
  const l = await RevocationList.open({
    file,
    debounceMs: 20,
    settleMs: 250,
    settleMaxMs: 2_000,
    log: (level, msg, fields) => logs.push({ level, msg: `${msg} ${JSON.stringify(fields)}` }),
    onRead: (r) => reads.push(r),
    ...over,
  });
  lists.push(l);
  return l;
}

/** Truncates `file` and writes `parts` with `gapMs` between them, as `cat new > file` does with a slow producer. */
async function writeInParts(file: string, parts: string[], gapMs: number, between?: () => void): Promise<void> {
  const fd = openSync(file, 'w');
  try {
    for (const [i, p] of parts.entries()) {
      if (i > 0) {
        await pause(gapMs);
        between?.();
      }
      writeSync(fd, p);
    }
  } finally {
    closeSync(fd);
  }
}

describe('a rewrite read until settled', () => {
  it('matches what the half-written file adds at once, lifts what it lacks only once settled, in one change', async () => {
    const file = path.join(dir, 'revoked.yaml');
    writeFileSync(file, 'revoked:\n  - { jti: stays }\n  - { jti: later-in-file }\n  - { jti: removed }\n');
    const l = await open(file);
    const changes: RevocationChange[] = [];
    l.onChange((c) => changes.push(c));
    const states: string[] = [];
    // First half: adds `new`, and (being cut) lacks later-in-file.
    await writeInParts(
      file,
      ['revoked:\n  - { jti: stays }\n  - { jti: new, reason: fresh }\n', '  - { jti: later-in-file }\n'],
      150,
      () => {
        // 150 ms after the first half: read (debounce 20 ms) but not settled (250 ms).
        states.push(
          `new=${l.match(jti('new')) !== undefined} later=${l.match(jti('later-in-file')) !== undefined} removed=${l.match(jti('removed')) !== undefined}`,
        );
      },
    );
    expect(states).toEqual(['new=true later=true removed=true']);
    expect(changes).toEqual([]);
    await until(() => l.match(jti('removed')) === undefined, 3_000);
    expect(l.match(jti('later-in-file'))).toBeDefined();
    expect(l.match(jti('new'))).toEqual({ reason: 'fresh' });
    expect(changes).toEqual([
      { source: 'file', entries: 3, added: [{ jti: 'new', reason: 'fresh' }], removed: [{ jti: 'removed' }] },
    ]);
    expect(logs.filter((x) => x.level !== 'info')).toEqual([]);
  });

  it('a JSON Lines rewrite cut at a line boundary lifts nothing until it is complete', async () => {
    const file = path.join(dir, 'revoked.jsonl');
    const lines = (from: number, to: number) =>
      Array.from({ length: to - from }, (_, i) => `{"jti":"j-${from + i}"}\n`).join('');
    writeFileSync(file, lines(0, 10));
    const l = await open(file);
    const seen: number[] = [];
    let probing = true;
    const probe = (async () => {
      while (probing) {
        seen.push([...Array(10).keys()].filter((i) => l.match(jti(`j-${i}`)) !== undefined).length);
        await pause(5);
      }
    })();
    // Same inode, shorter than what was read: not an append. The first half stops after line 4.
    await writeInParts(file, [lines(0, 4), lines(4, 10) + lines(10, 11)], 150);
    await until(() => l.match(jti('j-10')) !== undefined, 3_000);
    probing = false;
    await probe;
    expect(new Set(seen)).toEqual(new Set([10]));
    await until(() => l.size === 11, 3_000);
    expect({ reads: reads.filter((r) => !r.ok), logs: logs.filter((x) => x.level !== 'info') }).toEqual({
      reads: [],
      logs: [],
    });
  });

  it('a half-written last JSON Lines line of a rewrite is never taken: the lines before it count at once, it counts once whole', async () => {
    const file = path.join(dir, 'revoked.jsonl');
    writeFileSync(file, '{"jti":"old"}\n');
    const l = await open(file);
    const during: string[] = [];
    await writeInParts(file, ['{"jti":"a"}\n{"jti":"b","rea', 'son":"whole"}\n'], 150, () => {
      during.push(
        `a=${l.match(jti('a')) !== undefined} b=${l.match(jti('b')) !== undefined} old=${l.match(jti('old')) !== undefined}`,
      );
    });
    expect(during).toEqual(['a=true b=false old=true']);
    await until(() => l.match(jti('old')) === undefined, 3_000);
    expect(l.match(jti('b'))).toEqual({ reason: 'whole' });
    expect({ reads: reads.filter((r) => !r.ok), logs: logs.filter((x) => x.level !== 'info') }).toEqual({
      reads: [],
      logs: [],
    });
  });

  it('startup waits for the file to settle', async () => {
    const file = path.join(dir, 'revoked.yaml');
    const writing = writeInParts(file, ['revoked:\n  - { jti: first }\n', '  - { jti: second }\n'], 150);
    await pause(10);
    const l = await open(file, { watch: false });
    await writing;
    expect(l.match(jti('first'))).toBeDefined();
    expect(l.match(jti('second'))).toBeDefined();
  });

  it('a file that never settles keeps the list in force (plus what its reads added), warns, counts a failed read, and is down until it settles', async () => {
    const file = path.join(dir, 'revoked.yaml');
    writeFileSync(file, 'revoked:\n  - { jti: kept }\n');
    const l = await open(file, { watch: false, settleMaxMs: 600 });
    const changes: RevocationChange[] = [];
    l.onChange((c) => changes.push(c));
    let churning = true;
    const churn = (async () => {
      for (let i = 0; churning; i++) {
        writeFileSync(file, `revoked:\n  - { jti: churn-${i % 2} }\n`);
        await pause(60);
      }
    })();
    const result = await l.reload();
    churning = false;
    await churn;
    expect(result.ok).toBe(false);
    expect(l.match(jti('kept'))).toBeDefined();
    // What its reads revoked stays revoked (additions are always safe), told to listeners as an addition only.
    expect(l.match(jti('churn-0')) ?? l.match(jti('churn-1'))).toBeDefined();
    expect(changes.length).toBe(1);
    expect(changes[0]?.removed).toEqual([]);
    expect(logs.some((x) => x.level === 'warn' && x.msg.includes('did not settle'))).toBe(true);
    expect(reads.at(-1)).toMatchObject({ kind: 'full', ok: false });
    expect(l.health().up).toBe(false);
    // Quiet now: the next reload settles and applies the file as it is.
    expect(await l.reload()).toMatchObject({ ok: true });
    expect(l.match(jti('kept'))).toBeUndefined();
    expect(l.health().up).toBe(true);
  });
});
