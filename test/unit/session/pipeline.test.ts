// The response tracker: refusals replace the right ErrorResponse, extended batches skip to Sync, row caps cut honestly.
import { describe, expect, it } from 'vitest';
import { ResponseTracker, rewriteTagCount, type StatementTrace } from '../../../proxy/session/pipeline.ts';
import { FrontendType } from '../../../proxy/wire/codes.ts';
import { MessageFramer } from '../../../proxy/wire/framer.ts';
import { ProxyError } from '../../../lib/errors.ts';
import { Bytes, typed } from '../../helpers/bytes.ts';

const dataRow = (v: string) => typed('D', new Bytes().i16(1).i32(Buffer.byteLength(v)).str(v));
const complete = (tag: string) => typed('C', new Bytes().cstr(tag));
const ready = (s: 'I' | 'T' | 'E') => typed('Z', new Bytes().str(s));
const error = (code: string, msg = 'syntax error') =>
  typed('E', new Bytes().u8(0x53).cstr('ERROR').u8(0x43).cstr(code).u8(0x4d).cstr(msg).u8(0));
const rowDesc = typed('T', new Bytes().i16(0));

/** Feeds upstream bytes through the tracker and decodes what the client would receive as [type, text] pairs. */
function run(tracker: ResponseTracker, upstream: Buffer[]): [string, string][] {
  const framer = new MessageFramer({ maxMessageSize: 1 << 20 });
  framer.push(Buffer.concat(upstream));
  const out: Buffer[] = [];
  for (let f = framer.next(); f; f = framer.next()) tracker.onFrame(f, out);
  const back = new MessageFramer({ maxMessageSize: 1 << 20 });
  back.push(Buffer.concat(out));
  const seen: [string, string][] = [];
  for (let f = back.next(); f; f = back.next()) {
    const type = String.fromCharCode(f.type);
    let text = '';
    if (type === 'E' || type === 'N') {
      for (let i = 0; i < f.body.length && f.body[i] !== 0; ) {
        const end = f.body.indexOf(0, i + 1);
        if (f.body[i] === 0x43) text = f.body.subarray(i + 1, end).toString();
        i = end + 1;
      }
    } else if (type === 'C') text = f.body.subarray(0, f.body.length - 1).toString();
    else if (type === 'Z') text = String.fromCharCode(f.body[0]!);
    seen.push([type, text]);
  }
  return seen;
}

const denied = new ProxyError('ERR_STATEMENT_DENIED', 'permission denied by pgwarden');

describe('ResponseTracker', () => {
  it('replaces the sentinel error of a refused simple Query with the proxy error and keeps ReadyForQuery', () => {
    const t = new ResponseTracker(undefined);
    t.expect(FrontendType.Query, denied);
    expect(run(t, [error('42601'), ready('E')])).toEqual([
      ['E', '42501'],
      ['Z', 'E'],
    ]);
    expect(t.txStatus).toBe('E');
    expect(t.busy).toBe(false);
  });

  it('passes Postgres errors of allowed statements unchanged', () => {
    const t = new ResponseTracker(undefined);
    t.expect(FrontendType.Query);
    expect(run(t, [error('22012', 'division by zero'), ready('I')])).toEqual([
      ['E', '22012'],
      ['Z', 'I'],
    ]);
  });

  it('extended protocol: results before the refused Parse arrive first, the rest of the batch is skipped until Sync', () => {
    const t = new ResponseTracker(undefined);
    // Parse/Bind/Execute (allowed), Parse (refused), Bind, Execute, Sync
    t.expect(FrontendType.Parse);
    t.expect(FrontendType.Bind);
    t.expect(FrontendType.Execute, undefined, '');
    t.expect(FrontendType.Parse, denied);
    t.expect(FrontendType.Bind);
    t.expect(FrontendType.Execute, undefined, '');
    t.expect(FrontendType.Sync);
    const seen = run(t, [typed('1'), typed('2'), dataRow('1'), complete('SELECT 1'), error('42601'), ready('I')]);
    expect(seen).toEqual([
      ['1', ''],
      ['2', ''],
      ['D', ''],
      ['C', 'SELECT 1'],
      ['E', '42501'],
      ['Z', 'I'],
    ]);
    expect(t.busy).toBe(false);
  });

  it('an error of an earlier message in the batch is not mistaken for the refusal', () => {
    const t = new ResponseTracker(undefined);
    t.expect(FrontendType.Parse); // fails upstream on its own
    t.expect(FrontendType.Parse, denied); // skipped by Postgres: produces nothing
    t.expect(FrontendType.Sync);
    expect(run(t, [error('42P01', 'relation does not exist'), ready('I')])).toEqual([
      ['E', '42P01'],
      ['Z', 'I'],
    ]);
  });

  it('truncate mode: stops forwarding at the cap, warns and reports the rows actually sent', () => {
    const t = new ResponseTracker({ maxRows: 2, onRowCap: 'truncate' });
    const finished: StatementTrace[] = [];
    t.onFinish = (tr) => finished.push(tr);
    t.expect(FrontendType.Query, undefined, undefined, {
      seq: 1,
      startedAt: 0,
      rows: 0,
      sqlstate: undefined,
      truncated: false,
      rowCapError: false,
    });
    const seen = run(t, [
      rowDesc,
      dataRow('1'),
      dataRow('2'),
      dataRow('3'),
      dataRow('4'),
      complete('SELECT 4'),
      ready('I'),
    ]);
    expect(seen).toEqual([
      ['T', ''],
      ['D', ''],
      ['D', ''],
      ['N', '01000'],
      ['C', 'SELECT 2'],
      ['Z', 'I'],
    ]);
    expect(finished).toMatchObject([{ seq: 1, rows: 2, truncated: true, rowCapError: false }]);
  });

  it('error mode: 54000 in place of the surplus rows, and nothing more from that Query', () => {
    const t = new ResponseTracker({ maxRows: 1, onRowCap: 'error' });
    t.expect(FrontendType.Query);
    const seen = run(t, [
      rowDesc,
      dataRow('1'),
      dataRow('2'),
      complete('SELECT 2'),
      rowDesc,
      dataRow('x'),
      complete('SELECT 1'),
      ready('I'),
    ]);
    expect(seen).toEqual([
      ['T', ''],
      ['D', ''],
      ['E', '54000'],
      ['Z', 'I'],
    ]);
  });

  it('a portal executed in slices cannot read past the cap', () => {
    const t = new ResponseTracker({ maxRows: 3, onRowCap: 'truncate' });
    t.expect(FrontendType.Execute, undefined, 'p');
    t.expect(FrontendType.Execute, undefined, 'p');
    t.expect(FrontendType.Sync);
    const seen = run(t, [
      dataRow('1'),
      dataRow('2'),
      typed('s'),
      dataRow('3'),
      dataRow('4'),
      complete('SELECT 2'),
      ready('T'),
    ]);
    expect(seen.filter(([k]) => k === 'D').length).toBe(3);
    expect(seen.some(([k, v]) => k === 'N' && v === '01000')).toBe(true);
  });

  it('rewrites only the count of a command tag', () => {
    expect(rewriteTagCount('SELECT 150', 100)).toBe('SELECT 100');
    expect(rewriteTagCount('FETCH 400', 100)).toBe('FETCH 100');
    expect(rewriteTagCount('COPY 7', 5)).toBe('COPY 5');
  });
});

describe("ResponseTracker: pgwarden's own ROLLBACK before a refused statement that ends the transaction", () => {
  const own = { internal: true, quiet: true } as const;
  const notice = typed('N', new Bytes().u8(0x53).cstr('WARNING').u8(0x43).cstr('25P01').u8(0).u8(0));
  const parseOk = typed('1', Buffer.alloc(0));
  const bindOk = typed('2', Buffer.alloc(0));

  function rollbackThenRefused(t: ResponseTracker): void {
    t.expect(FrontendType.Parse, undefined, undefined, undefined, own);
    t.expect(FrontendType.Bind, undefined, undefined, undefined, own);
    t.expect(FrontendType.Execute, undefined, undefined, undefined, own);
    t.expect(FrontendType.Parse, denied);
  }

  it('swallows its answers and notice; the client sees the refusal and the Sync', () => {
    const t = new ResponseTracker(undefined);
    rollbackThenRefused(t);
    t.expect(FrontendType.Bind);
    t.expect(FrontendType.Execute);
    t.expect(FrontendType.Sync);
    expect(run(t, [parseOk, bindOk, notice, complete('ROLLBACK'), error('42601'), ready('I')])).toEqual([
      ['E', '42501'],
      ['Z', 'I'],
    ]);
    expect(t.busy).toBe(false);
  });

  it("after an error earlier in the batch (PostgreSQL skips pgwarden's messages too), the client's Sync is answered", () => {
    const t = new ResponseTracker(undefined);
    t.expect(FrontendType.Parse);
    t.expect(FrontendType.Bind);
    // Sent before the earlier error was answered: the tracker does not know PostgreSQL is skipping.
    rollbackThenRefused(t);
    t.expect(FrontendType.Sync);
    expect(run(t, [parseOk, error('22012', 'division by zero'), ready('E')])).toEqual([
      ['1', ''],
      ['E', '22012'],
      ['Z', 'E'],
    ]);
    expect(t.busy).toBe(false);
  });

  it("a simple Query ROLLBACK of its own: its CommandComplete, notice and ReadyForQuery stay pgwarden's", () => {
    const t = new ResponseTracker(undefined);
    t.expect(FrontendType.Query, undefined, undefined, undefined, own);
    t.expect(FrontendType.Query, denied);
    expect(run(t, [notice, complete('ROLLBACK'), ready('I'), error('42601'), ready('I')])).toEqual([
      ['E', '42501'],
      ['Z', 'I'],
    ]);
    expect(t.busy).toBe(false);
  });
});
