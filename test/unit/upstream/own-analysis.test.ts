// The analysis on the session's own connection, against a scripted backend: the messages it sends (extended protocol only, wrapped, every name closed), how it reads the answers, and its refusals.
import { describe, expect, it } from 'vitest';
import {
  encodeBindComplete,
  encodeCloseComplete,
  encodeCommandComplete,
  encodeErrorResponse,
  encodeNoticeResponse,
  encodeParameterStatus,
  encodeParseComplete,
  encodeReadyForQuery,
} from '../../../proxy/wire/backend.ts';
import { FrontendType } from '../../../proxy/wire/codes.ts';
import { MessageFramer, type Frame } from '../../../proxy/wire/framer.ts';
import { decodeBind, decodeClose, decodeParse } from '../../../proxy/wire/frontend.ts';
import {
  SessionAnalysis,
  SessionAnalysisBroken,
  UpstreamExchange,
  type SessionExchange,
  type TxStatus,
} from '../../../proxy/upstream/own-analysis.ts';

/** Whole frames of a byte string (what was sent, or a scripted answer). */
function frames(bytes: Buffer): Frame[] {
  const f = new MessageFramer({ maxMessageSize: 1 << 24 });
  f.push(bytes);
  const out: Frame[] = [];
  for (let x = f.next(); x; x = f.next())
    out.push({ type: x.type, body: Buffer.from(x.body), raw: Buffer.from(x.raw) });
  return out;
}

/** An ErrorResponse with a CONTEXT field (W), as an error raised inside a function has. */
function errorWithContext(code: string, message: string, context: string): Buffer {
  const body = Buffer.from(`SERROR\0VERROR\0C${code}\0M${message}\0W${context}\0\0`, 'utf8');
  const head = Buffer.alloc(5);
  head[0] = 0x45;
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

const tree = (text: string) =>
  encodeNoticeResponse({ severity: 'LOG', sqlstate: '00000', message: 'parse tree:', detail: text });

/** The answers of a wrapper that ran as planned around `middle`, ending in `status`. */
function wrapperAnswers(middle: Buffer[], status: 'I' | 'T', endStatus: TxStatus = status): Buffer {
  return Buffer.concat([
    encodeParseComplete(),
    encodeBindComplete(),
    encodeCommandComplete(status === 'T' ? 'SAVEPOINT' : 'BEGIN'),
    encodeParseComplete(),
    encodeBindComplete(),
    encodeCommandComplete('SELECT 1'),
    encodeReadyForQuery('T'),
    ...middle,
    encodeParseComplete(),
    encodeBindComplete(),
    encodeCommandComplete('ROLLBACK'),
    encodeReadyForQuery(endStatus as 'I' | 'T'),
  ]);
}

/** A scripted session side: records what was sent for `status`, answers with `answer(sent)`. */
function scripted(status: TxStatus, answer: (sent: Frame[]) => Buffer) {
  const sent: Frame[][] = [];
  const exchange: SessionExchange = async (make) => {
    const plan = make(status);
    if (plan === undefined) return { status, frames: [] };
    const out = frames(Buffer.concat(plan.messages));
    sent.push(out);
    const reader = new UpstreamExchange(plan.readyCount, 1 << 20);
    const rest = reader.push(answer(out));
    expect(rest).toBeDefined();
    return { status, frames: reader.frames };
  };
  return { sent, exchange };
}

describe('SessionAnalysis messages', () => {
  for (const status of ['I', 'T'] as const) {
    it(`status ${status}: extended protocol only, wrapped, unguessable names, all closed`, async () => {
      const { sent, exchange } = scripted(status, () =>
        wrapperAnswers(
          [encodeParseComplete(), tree('{QUERY :commandType 1}'), encodeCloseComplete(), encodeReadyForQuery('T')],
          status,
        ),
      );
      const broken: Error[] = [];
      const a = new SessionAnalysis(exchange, { timeoutMs: 5000, onBroken: (e) => broken.push(e) });
      const r = await a.parseTree('SELECT 1', []);
      expect(r).toEqual({ ok: true, tree: '{QUERY :commandType 1}' });
      expect(broken).toEqual([]);
      const msgs = sent[0] ?? [];
      // No simple Query: it would destroy the client's unnamed statement and portal.
      expect(msgs.some((m) => m.type === FrontendType.Query)).toBe(false);
      const parses = msgs.filter((m) => m.type === FrontendType.Parse).map((m) => decodeParse(m.body));
      const binds = msgs.filter((m) => m.type === FrontendType.Bind).map((m) => decodeBind(m.body));
      for (const p of parses) expect(p.name).toMatch(/^pgwarden_[0-9a-f]{24}$/);
      for (const b of binds) expect(b.portal).toMatch(/^pgwarden_[0-9a-f]{24}$/);
      expect(new Set(parses.map((p) => p.name)).size).toBe(parses.length);
      const texts = parses.map((p) => p.sql);
      if (status === 'T') {
        expect(texts[0]).toMatch(/^SAVEPOINT pgwarden_[0-9a-f]{24}$/);
        expect(texts).toContain(texts[0]?.replace('SAVEPOINT', 'ROLLBACK TO SAVEPOINT'));
        expect(texts).toContain(texts[0]?.replace('SAVEPOINT', 'RELEASE SAVEPOINT'));
      } else {
        expect(texts[0]).toBe('BEGIN READ ONLY');
        expect(texts).toContain('ROLLBACK');
      }
      // The settings only for the wrapper's own transaction or savepoint (set_config's is_local).
      expect(texts[1]).toMatch(/set_config\('client_min_messages', 'log', true\)/);
      expect(texts[1]).toMatch(/set_config\('debug_print_parse', 'on', true\)/);
      expect(texts).toContain('SELECT 1');
      const closed = msgs.filter((m) => m.type === FrontendType.Close).map((m) => decodeClose(m.body));
      expect(new Set(closed.filter((c) => c.target === 'S').map((c) => c.name))).toEqual(
        new Set(parses.map((p) => p.name)),
      );
      expect(new Set(closed.filter((c) => c.target === 'P').map((c) => c.name))).toEqual(
        new Set(binds.map((b) => b.portal)),
      );
      expect(msgs.filter((m) => m.type === FrontendType.Sync)).toHaveLength(3);
      expect(msgs[msgs.length - 1]?.type).toBe(FrontendType.Sync);
    });
  }

  it('an aborted transaction sends nothing and gets PostgreSQL 25P02', async () => {
    const { sent, exchange } = scripted('E', () => Buffer.alloc(0));
    const a = new SessionAnalysis(exchange, { timeoutMs: 5000, onBroken: () => {} });
    const r = await a.parseTree('SELECT 1', []);
    expect(sent).toEqual([]);
    expect(r.ok === false && 'error' in r && r.error.sqlstate).toBe('25P02');
  });

  it('two trees, or an error with a CONTEXT, mean user code ran: refused as such', async () => {
    for (const middle of [
      [encodeParseComplete(), tree('{A}'), tree('{B}'), encodeCloseComplete(), encodeReadyForQuery('T')],
      [errorWithContext('23514', 'check', 'SQL function "f"'), encodeReadyForQuery('E')],
    ]) {
      const { exchange } = scripted('T', () => wrapperAnswers(middle, 'T'));
      const a = new SessionAnalysis(exchange, { timeoutMs: 5000, onBroken: () => {} });
      expect(await a.parseTree('SELECT x', [])).toEqual({ ok: false, userCode: true });
    }
  });

  it("the server's own error is the statement's", async () => {
    const { exchange } = scripted('T', () =>
      wrapperAnswers(
        [
          encodeErrorResponse({
            severity: 'ERROR',
            sqlstate: '42703',
            message: 'column "x" does not exist',
            position: 8,
          }),
          encodeReadyForQuery('E'),
        ],
        'T',
      ),
    );
    const a = new SessionAnalysis(exchange, { timeoutMs: 5000, onBroken: () => {} });
    const r = await a.parseTree('SELECT x', []);
    expect(r.ok === false && 'error' in r && [r.error.sqlstate, r.error.position]).toEqual(['42703', 8]);
  });

  it('a wrapper that did not end where it began ends the session', async () => {
    const { exchange } = scripted('T', () =>
      wrapperAnswers([encodeParseComplete(), tree('{A}'), encodeCloseComplete(), encodeReadyForQuery('T')], 'T', 'E'),
    );
    const broken: Error[] = [];
    const a = new SessionAnalysis(exchange, { timeoutMs: 5000, onBroken: (e) => broken.push(e) });
    await expect(a.parseTree('SELECT 1', [])).rejects.toBeInstanceOf(SessionAnalysisBroken);
    expect(broken).toHaveLength(1);
  });
});

describe('UpstreamExchange', () => {
  it('reads answers byte by byte to the last ReadyForQuery, sets notifications aside, and returns what follows', () => {
    const notification = Buffer.from([0x41, 0, 0, 0, 11, 0, 0, 0, 7, 0x63, 0, 0]);
    const after = encodeCommandComplete('LATER');
    const bytes = Buffer.concat([
      encodeParseComplete(),
      notification,
      encodeReadyForQuery('T'),
      encodeReadyForQuery('T'),
      after,
    ]);
    const r = new UpstreamExchange(2, 1 << 20);
    let rest: Buffer | undefined;
    for (let i = 0; i < bytes.length; i++) {
      expect(rest).toBeUndefined();
      rest = r.push(bytes.subarray(i, i + 1));
      if (rest !== undefined && i < bytes.length - 1) rest = Buffer.concat([rest, bytes.subarray(i + 1)]);
      if (rest !== undefined) break;
    }
    expect(r.done).toBe(true);
    expect(rest).toEqual(after);
    expect(r.notifications).toEqual([notification]);
    expect(r.frames.map((f) => String.fromCharCode(f.type)).join('')).toBe('1ZZ');
  });

  it("sets ParameterStatus aside for the client: a setting the client's batch changed is reported at the wrapper's ReadyForQuery", () => {
    const status = encodeParameterStatus('DateStyle', 'SQL, DMY');
    const r = new UpstreamExchange(1, 1 << 20);
    const rest = r.push(Buffer.concat([encodeParseComplete(), status, encodeReadyForQuery('T')]));
    expect(rest).toEqual(Buffer.alloc(0));
    expect(r.parameters).toEqual([status]);
    expect(r.frames.map((f) => String.fromCharCode(f.type)).join('')).toBe('1Z');
  });

  it('a FATAL ends the exchange with an error; a notice past the tree limit is kept as an empty error', () => {
    const fatal = new UpstreamExchange(1, 1 << 20);
    expect(() => fatal.push(encodeErrorResponse({ severity: 'FATAL', sqlstate: '57P01', message: 'bye' }))).toThrow(
      /ended by the server/,
    );
    const big = new UpstreamExchange(1, 10);
    big.push(Buffer.concat([tree('x'.repeat(100)), encodeReadyForQuery('T')]));
    expect(big.frames[0]?.body.length).toBe(0);
  });
});
