// The response tracker after a reload: each entry's own row cap, rows counted per cursor, and pgwarden's own messages swallowed.
import { describe, expect, it } from 'vitest';
import { ResponseTracker } from '../../../proxy/session/pipeline.ts';
import { FrontendType } from '../../../proxy/wire/codes.ts';
import { MessageFramer } from '../../../proxy/wire/framer.ts';
import { Bytes, typed } from '../../helpers/bytes.ts';

const dataRow = (v: string) => typed('D', new Bytes().i16(1).i32(Buffer.byteLength(v)).str(v));
const complete = (tag: string) => typed('C', new Bytes().cstr(tag));
const ready = (s: 'I' | 'T' | 'E') => typed('Z', new Bytes().str(s));
const rowDesc = typed('T', new Bytes().i16(0));
const closeComplete = typed('3');
const suspended = typed('s');
const copyOut = typed('H', new Bytes().u8(0).i16(1).i16(0));
const copyData = (v: string) => typed('d', new Bytes().str(v + '\n'));
const copyDone = typed('c');

function run(tracker: ResponseTracker, upstream: Buffer[]): string[] {
  const framer = new MessageFramer({ maxMessageSize: 1 << 20 });
  framer.push(Buffer.concat(upstream));
  const out: Buffer[] = [];
  for (let f = framer.next(); f; f = framer.next()) tracker.onFrame(f, out);
  const back = new MessageFramer({ maxMessageSize: 1 << 20 });
  back.push(Buffer.concat(out));
  const seen: string[] = [];
  for (let f = back.next(); f; f = back.next()) {
    const type = String.fromCharCode(f.type);
    seen.push(type === 'C' ? `C ${f.body.subarray(0, f.body.length - 1).toString()}` : type);
  }
  return seen;
}

const rows = (n: number) => Array.from({ length: n }, (_, i) => dataRow(String(i)));

describe('ResponseTracker: per-decision caps', () => {
  it('each Query is capped by the cap it was sent with, not the tracker default', () => {
    const t = new ResponseTracker({ maxRows: 100, onRowCap: 'truncate' });
    t.expect(FrontendType.Query, undefined, undefined, undefined, { cap: { maxRows: 2, onRowCap: 'truncate' } });
    expect(run(t, [rowDesc, ...rows(5), complete('SELECT 5'), ready('I')])).toEqual([
      'T',
      'D',
      'D',
      'N',
      'C SELECT 2',
      'Z',
    ]);
    t.expect(FrontendType.Query, undefined, undefined, undefined, { cap: undefined });
    expect(run(t, [rowDesc, ...rows(5), complete('SELECT 5'), ready('I')]).filter((x) => x === 'D')).toHaveLength(5);
  });

  it('COPY TO STDOUT is capped by its entry', () => {
    const t = new ResponseTracker(undefined);
    t.expect(FrontendType.Query, undefined, undefined, undefined, { cap: { maxRows: 3, onRowCap: 'truncate' } });
    const seen = run(t, [
      copyOut,
      ...['a', 'b', 'c', 'd', 'e'].map(copyData),
      copyDone,
      complete('COPY 5'),
      ready('I'),
    ]);
    expect(seen.filter((x) => x === 'd')).toHaveLength(3);
    expect(seen).toContain('C COPY 3');
  });

  it('rows read from one cursor are counted across FETCHes and protocol Executes', () => {
    const t = new ResponseTracker(undefined);
    const cap = { maxRows: 5, onRowCap: 'truncate' as const };
    // "SELECT 1; FETCH 3 FROM c": only the second statement reads the cursor.
    t.expect(FrontendType.Query, undefined, undefined, undefined, { cap, cursors: [undefined, 'c'] });
    const first = run(t, [
      rowDesc,
      dataRow('x'),
      complete('SELECT 1'),
      rowDesc,
      ...rows(3),
      complete('FETCH 3'),
      ready('I'),
    ]);
    expect(first.filter((x) => x === 'D')).toHaveLength(4);
    t.expect(FrontendType.Execute, undefined, 'c', undefined, { cap, cursors: ['c'] });
    t.expect(FrontendType.Sync);
    const second = run(t, [...rows(3), suspended, ready('T')]);
    expect(second.filter((x) => x === 'D')).toHaveLength(2);
    t.expect(FrontendType.Query, undefined, undefined, undefined, { cap, cursors: ['c'] });
    expect(run(t, [rowDesc, ...rows(3), complete('FETCH 3'), ready('T')])).toEqual(['T', 'N', 'C FETCH 0', 'Z']);
    // A new DECLARE of the name starts the count again.
    t.cursorReset('c');
    t.expect(FrontendType.Query, undefined, undefined, undefined, { cap, cursors: ['c'] });
    expect(run(t, [rowDesc, ...rows(2), complete('FETCH 2'), ready('T')]).filter((x) => x === 'D')).toHaveLength(2);
  });
});

describe('ResponseTracker: internal messages', () => {
  it("the responses to pgwarden's own Close + Sync are not forwarded, and the client's next Query is answered normally", () => {
    const t = new ResponseTracker(undefined);
    t.expect(FrontendType.Close, undefined, undefined, undefined, { internal: true });
    t.expect(FrontendType.Close, undefined, undefined, undefined, { internal: true });
    t.expect(FrontendType.Sync, undefined, undefined, undefined, { internal: true });
    t.expect(FrontendType.Query);
    expect(t.atBatchBoundary).toBe(true);
    expect(
      run(t, [closeComplete, closeComplete, ready('I'), rowDesc, dataRow('1'), complete('SELECT 1'), ready('I')]),
    ).toEqual(['T', 'D', 'C SELECT 1', 'Z']);
    expect(t.busy).toBe(false);
  });

  it('an open extended batch is not a boundary', () => {
    const t = new ResponseTracker(undefined);
    t.expect(FrontendType.Parse);
    t.expect(FrontendType.Bind);
    expect(t.atBatchBoundary).toBe(false);
    t.expect(FrontendType.Sync);
    expect(t.atBatchBoundary).toBe(true);
  });
});
