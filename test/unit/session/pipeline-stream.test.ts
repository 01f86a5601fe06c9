// Rows streamed through in parts are counted and capped exactly as whole ones; idleSinceReady marks the end of every transaction.
import { describe, expect, it } from 'vitest';
import { ResponseTracker } from '../../../proxy/session/pipeline.ts';
import { BackendType, FrontendType } from '../../../proxy/wire/codes.ts';
import { MessageFramer } from '../../../proxy/wire/framer.ts';
import { Bytes, typed } from '../../helpers/bytes.ts';

const dataRow = (v: string) => typed('D', new Bytes().i16(1).i32(Buffer.byteLength(v)).str(v));
const ready = (s: 'I' | 'T' | 'E') => typed('Z', new Bytes().str(s));

function frames(...bufs: Buffer[]) {
  const f = new MessageFramer({ maxMessageSize: 1 << 20 });
  f.push(Buffer.concat(bufs));
  const out = [];
  for (let x = f.next(); x; x = f.next()) out.push(x);
  return out;
}

describe('ResponseTracker.onStreamStart', () => {
  it('truncate mode: streamed rows past the cap are dropped, and counted like whole rows (mixing both)', () => {
    const t = new ResponseTracker(undefined);
    t.expect(FrontendType.Query, undefined, undefined, undefined, { cap: { maxRows: 3, onRowCap: 'truncate' } });
    const out: Buffer[] = [];
    const [row] = frames(dataRow('x'));
    expect(t.onFrame(row!, out)).toBe(true);
    expect(t.onStreamStart(BackendType.DataRow, out)).toBe(true);
    expect(t.onFrame(row!, out)).toBe(true);
    expect(t.onStreamStart(BackendType.DataRow, out)).toBe(false);
    expect(t.onFrame(row!, out)).toBe(false);
    expect(t.rowsRelayed).toBe(3);
  });

  it('error mode: the first streamed row past the cap pushes one 54000 error, nothing after it is forwarded', () => {
    const t = new ResponseTracker(undefined);
    t.expect(FrontendType.Query, undefined, undefined, undefined, { cap: { maxRows: 1, onRowCap: 'error' } });
    const out: Buffer[] = [];
    expect(t.onStreamStart(BackendType.DataRow, out)).toBe(true);
    expect(out).toHaveLength(0);
    expect(t.onStreamStart(BackendType.DataRow, out)).toBe(false);
    expect(out).toHaveLength(1);
    expect(out[0]?.toString('latin1')).toContain('54000');
    expect(t.onStreamStart(BackendType.DataRow, out)).toBe(false);
    expect(out).toHaveLength(1);
  });

  it('without a cap every streamed row is forwarded and counted on its trace', () => {
    const t = new ResponseTracker(undefined);
    const trace = { seq: 1, startedAt: 0, rows: 0, sqlstate: undefined, truncated: false, rowCapError: false };
    t.expect(FrontendType.Query, undefined, undefined, trace, { cap: undefined });
    for (let i = 0; i < 5; i++) expect(t.onStreamStart(BackendType.CopyData, [])).toBe(true);
    expect(trace.rows).toBe(5);
    expect(t.rowsRelayed).toBe(5);
  });
});

describe('ResponseTracker.idleSinceReady', () => {
  it('is set by a ReadyForQuery that ends everything outside a transaction, and cleared by the next message', () => {
    const t = new ResponseTracker(undefined);
    const out: Buffer[] = [];
    t.expect(FrontendType.Bind);
    t.expect(FrontendType.Sync);
    t.expect(FrontendType.Bind);
    t.expect(FrontendType.Sync);
    const [bindComplete, z] = frames(typed('2'), ready('I'));
    t.onFrame(bindComplete!, out);
    t.onFrame(z!, out);
    expect(t.idleSinceReady).toBe(false); // the second batch is still due
    t.onFrame(bindComplete!, out);
    t.onFrame(z!, out);
    expect(t.idleSinceReady).toBe(true);
    t.expect(FrontendType.Bind);
    expect(t.idleSinceReady).toBe(false);
    t.onFrame(bindComplete!, out);
    expect(t.idleSinceReady).toBe(false); // a Bind answered before any Sync: its implicit transaction is open
    t.expect(FrontendType.Sync);
    const [inTx] = frames(ready('T'));
    t.onFrame(inTx!, out);
    expect(t.idleSinceReady).toBe(false);
  });
});

describe('ResponseTracker after an extended-protocol error', () => {
  const error = (code: string) =>
    typed('E', new Bytes().u8(0x53).cstr('ERROR').u8(0x43).cstr(code).u8(0x4d).cstr('bad').u8(0));

  it('with no Sync sent, what is sent until one is is not queued (PostgreSQL discards it) and its statements finish with the error', () => {
    const t = new ResponseTracker(undefined);
    const finished: (string | undefined)[] = [];
    t.onFinish = (tr) => finished.push(tr.sqlstate);
    t.expect(FrontendType.Bind);
    const [e] = frames(error('08P01'));
    t.onFrame(e!, []);
    expect(t.outstanding).toBe(0);
    for (let i = 0; i < 100; i++) {
      t.expect(FrontendType.Bind);
      t.expect(FrontendType.Execute, undefined, '', {
        seq: i,
        startedAt: 0,
        rows: 0,
        sqlstate: undefined,
        truncated: false,
        rowCapError: false,
      });
    }
    expect(t.outstanding).toBe(0);
    expect(finished).toHaveLength(100);
    expect(new Set(finished)).toEqual(new Set(['08P01']));
    // The Sync ends the skipping: it and what follows are answered again.
    t.expect(FrontendType.Sync);
    t.expect(FrontendType.Parse);
    expect(t.outstanding).toBe(2);
  });

  it('with a Sync already sent, messages after it are answered and stay queued', () => {
    const t = new ResponseTracker(undefined);
    t.expect(FrontendType.Bind);
    t.expect(FrontendType.Sync);
    const [e] = frames(error('22P02'));
    t.onFrame(e!, []);
    t.expect(FrontendType.Parse);
    expect(t.outstanding).toBe(2);
  });
});
