// In-memory peers for driving a Session without sockets or a database: a duplex pair, a scripted PostgreSQL backend, a message collector.
import { Duplex } from 'node:stream';
import type { UpstreamConfig } from '../../proxy/config/types.ts';
import type { UpstreamConnection, UpstreamConnector } from '../../proxy/upstream/connect.ts';
import { loginUpstream } from '../../proxy/upstream/connect.ts';
import {
  encodeAuthenticationOk,
  encodeBackendKeyData,
  encodeBindComplete,
  encodeCloseComplete,
  encodeCommandComplete,
  encodeErrorResponse,
  encodeNoData,
  encodeParameterStatus,
  encodeParseComplete,
  encodeReadyForQuery,
} from '../../proxy/wire/backend.ts';
import { Bytes, typed } from './bytes.ts';

/**
 * Two connected streams, as the two ends of a socket: what is written to one is read from the other, and ending one
 * ends the other's reading. allowHalfOpen false, as for net.Server's sockets: a peer's end closes this side too.
 */
export function duplexPair(): [Duplex, Duplex] {
  const make = (peer: () => Duplex): Duplex =>
    new Duplex({
      allowHalfOpen: false,
      read() {},
      write(chunk: Buffer, _enc, cb) {
        // A copy, as a socket would deliver: the writer may reuse its buffer.
        peer().push(Buffer.from(chunk));
        cb();
      },
      final(cb) {
        peer().push(null);
        cb();
      },
      destroy(err, cb) {
        // A destroyed socket is seen by its peer as closed.
        const p = peer();
        if (!p.readableEnded) p.push(null);
        cb(err);
      },
    });
  const a: Duplex = make(() => b);
  const b: Duplex = make(() => a);
  return [a, b];
}

/** One whole message: its type letter ('' for an untyped startup packet), body, and the bytes as received. */
export interface Message {
  type: string;
  body: Buffer;
  raw: Buffer;
}

/**
 * Frames a byte stream into messages; with `startup`, the first is an untyped startup packet. Independent of
 * proxy/wire/framer.ts so the bytes the session sends are checked by code that does not share its framing.
 */
export class MessageReader {
  readonly messages: Message[] = [];
  ended = false;
  private buf = Buffer.alloc(0);
  private waiters: { pred: () => boolean; resolve: () => void }[] = [];

  constructor(
    stream: Duplex,
    private startup = false,
  ) {
    stream.on('data', (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      for (;;) {
        const head = this.startup ? 0 : 1;
        if (this.buf.length < head + 4) break;
        const len = this.buf.readInt32BE(head);
        if (len < 4) throw new Error(`bad message length ${len}`);
        if (this.buf.length < head + len) break;
        const raw = Buffer.from(this.buf.subarray(0, head + len));
        this.buf = this.buf.subarray(head + len);
        this.messages.push({
          type: this.startup ? '' : String.fromCharCode(raw[0] as number),
          body: raw.subarray(head + 4),
          raw,
        });
        this.startup = false;
      }
      this.check();
    });
    stream.on('end', () => {
      this.ended = true;
      this.check();
    });
  }

  /** Bytes received that do not (yet) make a whole message. */
  get partial(): number {
    return this.buf.length;
  }

  private check(): void {
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred()) return true;
      w.resolve();
      return false;
    });
  }

  /** Resolves once `pred` holds (checked now and after every chunk); rejects after `ms`. */
  until(pred: () => boolean, what: string, ms = 5_000): Promise<void> {
    if (pred()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `timed out waiting for ${what}; got ${this.messages.map((m) => m.type || 'startup').join(' ')}${this.ended ? ' <end>' : ''}`,
            ),
          ),
        ms,
      );
      this.waiters.push({
        pred,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  /** Resolves once `n` messages have arrived in all. */
  count(n: number): Promise<void> {
    return this.until(() => this.messages.length >= n, `${n} messages`);
  }

  /** Resolves when a message of `type` arrives after the first `from` messages. */
  typeAfter(type: string, from: number): Promise<void> {
    return this.until(() => this.messages.slice(from).some((m) => m.type === type), `a '${type}' message`);
  }

  endOfStream(): Promise<void> {
    return this.until(() => this.ended, 'the end of the stream');
  }

  /** The messages from index `from` on, as one buffer (to compare with expected bytes). */
  bytes(from = 0): Buffer {
    return Buffer.concat(this.messages.slice(from).map((m) => m.raw));
  }
}

/** The fields of an ErrorResponse or NoticeResponse body, in order, as [field letter, text]. */
export function errorFields(body: Buffer): [string, string][] {
  const out: [string, string][] = [];
  let pos = 0;
  while (pos < body.length && body[pos] !== 0) {
    const end = body.indexOf(0, pos + 1);
    if (end < 0) throw new Error('unterminated error field');
    out.push([String.fromCharCode(body[pos] as number), body.subarray(pos + 1, end).toString('utf8')]);
    pos = end + 1;
  }
  if (pos !== body.length - 1) throw new Error('error fields not terminated by exactly one NUL');
  return out;
}

/** An ErrorResponse built by hand (fields in PostgreSQL's order: S, V, C, M, then D, H when given). */
export function errorResponse(
  severity: string,
  sqlstate: string,
  message: string,
  detail?: string,
  hint?: string,
): Buffer {
  const b = new Bytes().u8(0x53).cstr(severity).u8(0x56).cstr(severity).u8(0x43).cstr(sqlstate).u8(0x4d).cstr(message);
  if (detail !== undefined) b.u8(0x44).cstr(detail);
  if (hint !== undefined) b.u8(0x48).cstr(hint);
  return typed('E', b.u8(0));
}

/** A scripted result: column names (text, type 25), rows of text values, and the command tag. */
export interface ScriptedResult {
  columns: string[];
  rows: (string | null)[][];
  tag: string;
  /** After sending this many rows the backend closes its connection, as a crashed or killed server would. */
  dieAfterRows?: number;
}

export function rowDescription(columns: string[]): Buffer {
  const b = new Bytes().i16(columns.length);
  // name, table OID, column number, type OID (text), type size, type modifier, format (text)
  for (const c of columns) b.cstr(c).i32(0).i16(0).i32(25).i16(-1).i32(-1).i16(0);
  return typed('T', b);
}

export function dataRow(values: (string | null)[]): Buffer {
  const b = new Bytes().i16(values.length);
  for (const v of values) {
    if (v === null) b.i32(-1);
    else b.i32(Buffer.byteLength(v)).str(v);
  }
  return typed('D', b);
}

const cstrAt = (buf: Buffer, pos: number): [string, number] => {
  const end = buf.indexOf(0, pos);
  if (end < 0) throw new Error('unterminated string');
  return [buf.subarray(pos, end).toString('utf8'), end + 1];
};

/**
 * A PostgreSQL backend that knows only the SQL texts it was given: each runs to its scripted result, any other text
 * fails as PostgreSQL fails text it cannot parse (42601). Speaks the protocol PostgreSQL does: trust login, simple
 * Query, and the extended protocol with its rule that after an error everything up to Sync is discarded.
 */
export class FakeBackend {
  /** pgwarden's end of the connection. */
  readonly pgwardenEnd: Duplex;
  private readonly end: Duplex;
  /** Everything pgwarden sent, startup packet first. */
  readonly from: MessageReader;
  readonly results = new Map<string, ScriptedResult>();
  readonly processId = 4242;
  readonly secretKey = Buffer.from([1, 2, 3, 4]);
  /** ParameterStatus values sent at login, in order. */
  readonly parameters: [string, string][] = [
    ['server_version', '15.4'],
    ['client_encoding', 'UTF8'],
    ['standard_conforming_strings', 'on'],
  ];
  private failed = false;
  private txStatus: 'I' | 'T' | 'E' = 'I';
  private readonly prepared = new Map<string, string>();
  private readonly portals = new Map<string, string>();
  private handled = 0;

  constructor() {
    const [pgwardenEnd, end] = duplexPair();
    this.pgwardenEnd = pgwardenEnd;
    this.end = end;
    this.from = new MessageReader(end, true);
    end.on('data', () => this.serve());
  }

  /** The startup parameters pgwarden logged in with. */
  get startup(): Map<string, string> {
    const m = this.from.messages[0];
    if (m === undefined || m.type !== '') throw new Error('no startup packet yet');
    const out = new Map<string, string>();
    let pos = 4;
    while (pos < m.body.length && m.body[pos] !== 0) {
      const [k, p1] = cstrAt(m.body, pos);
      const [v, p2] = cstrAt(m.body, p1);
      out.set(k, v);
      pos = p2;
    }
    return out;
  }

  /** Messages pgwarden sent after its startup packet. */
  get received(): Message[] {
    return this.from.messages.slice(1);
  }

  /** Closes the connection from the server's side. */
  kill(): void {
    this.end.destroy();
  }

  private send(...bufs: Buffer[]): void {
    if (!this.end.destroyed) this.end.write(Buffer.concat(bufs));
  }

  private serve(): void {
    for (; this.handled < this.from.messages.length; this.handled++) {
      const m = this.from.messages[this.handled] as Message;
      if (this.end.destroyed) return;
      this.handle(m);
    }
  }

  private run(sql: string, out: Buffer[], withDescription: boolean): boolean {
    if (this.txStatus === 'E' && sql !== 'COMMIT' && sql !== 'ROLLBACK') {
      out.push(
        encodeErrorResponse({
          severity: 'ERROR',
          sqlstate: '25P02',
          message: 'current transaction is aborted, commands ignored until end of transaction block',
        }),
      );
      return false;
    }
    if (this.txStatus === 'E') {
      // COMMIT of a failed transaction rolls it back, and says so in its tag.
      out.push(encodeCommandComplete('ROLLBACK'));
      this.txStatus = 'I';
      return true;
    }
    const r = this.results.get(sql);
    if (r === undefined) {
      out.push(
        encodeErrorResponse({
          severity: 'ERROR',
          sqlstate: '42601',
          message: `syntax error at or near "${sql.split(' ')[0] ?? ''}"`,
          position: 1,
        }),
      );
      return false;
    }
    // A command without columns (BEGIN, COMMIT, INSERT, …) sends no RowDescription.
    if (withDescription && r.columns.length > 0) out.push(rowDescription(r.columns));
    let sent = 0;
    for (const row of r.rows) {
      if (r.dieAfterRows !== undefined && sent === r.dieAfterRows) {
        this.send(...out);
        out.length = 0;
        this.kill();
        return false;
      }
      out.push(dataRow(row));
      sent++;
    }
    out.push(encodeCommandComplete(r.tag));
    if (r.tag === 'BEGIN') this.txStatus = 'T';
    if (r.tag === 'COMMIT' || r.tag === 'ROLLBACK') this.txStatus = 'I';
    return true;
  }

  /** An error inside a transaction block fails the transaction, as in PostgreSQL. */
  private txFailed(): void {
    if (this.txStatus === 'T') this.txStatus = 'E';
  }

  private handle(m: Message): void {
    const out: Buffer[] = [];
    switch (m.type) {
      case '': {
        out.push(encodeAuthenticationOk());
        for (const [k, v] of this.parameters) out.push(encodeParameterStatus(k, v));
        out.push(encodeBackendKeyData(this.processId, this.secretKey), encodeReadyForQuery('I'));
        break;
      }
      case 'Q': {
        const [sql] = cstrAt(m.body, 0);
        if (!this.run(sql, out, true)) this.txFailed();
        if (this.end.destroyed) return;
        out.push(encodeReadyForQuery(this.txStatus));
        break;
      }
      case 'S':
        this.failed = false;
        this.portals.clear();
        out.push(encodeReadyForQuery(this.txStatus));
        break;
      case 'X':
        this.end.end();
        return;
      case 'H':
        break;
      default: {
        // Extended protocol: after an error the server discards every message up to Sync.
        if (this.failed) return;
        if (m.type === 'P') {
          const [name, p] = cstrAt(m.body, 0);
          const [sql] = cstrAt(m.body, p);
          if (name !== '' && this.prepared.has(name)) {
            // As PostgreSQL: a named statement is replaced only after a Close.
            out.push(
              encodeErrorResponse({
                severity: 'ERROR',
                sqlstate: '42P05',
                message: `prepared statement "${name}" already exists`,
              }),
            );
            this.failed = true;
            this.txFailed();
          } else if (!this.results.has(sql)) {
            this.run(sql, out, false);
            this.failed = true;
            this.txFailed();
          } else {
            this.prepared.set(name, sql);
            out.push(encodeParseComplete());
          }
        } else if (m.type === 'B') {
          const [portal, p] = cstrAt(m.body, 0);
          const [statement] = cstrAt(m.body, p);
          const sql = this.prepared.get(statement);
          if (sql === undefined) {
            out.push(
              encodeErrorResponse({
                severity: 'ERROR',
                sqlstate: '26000',
                message: `prepared statement "${statement}" does not exist`,
              }),
            );
            this.failed = true;
          } else {
            this.portals.set(portal, sql);
            out.push(encodeBindComplete());
          }
        } else if (m.type === 'D') {
          const target = String.fromCharCode(m.body[0] as number);
          const [name] = cstrAt(m.body, 1);
          const sql = target === 'S' ? this.prepared.get(name) : this.portals.get(name);
          const r = sql === undefined ? undefined : this.results.get(sql);
          if (target === 'S') out.push(typed('t', new Bytes().i16(0)));
          out.push(r === undefined || r.columns.length === 0 ? encodeNoData() : rowDescription(r.columns));
        } else if (m.type === 'E') {
          const [portal] = cstrAt(m.body, 0);
          const sql = this.portals.get(portal);
          if (sql === undefined || !this.run(sql, out, false)) {
            this.failed = true;
            this.txFailed();
          }
          if (this.end.destroyed) return;
        } else if (m.type === 'C') {
          const [name] = cstrAt(m.body, 1);
          if (m.body[0] === 0x53) this.prepared.delete(name);
          else this.portals.delete(name);
          out.push(encodeCloseComplete());
        } else {
          out.push(
            encodeErrorResponse({
              severity: 'FATAL',
              sqlstate: '08P01',
              message: `invalid frontend message type ${m.type.charCodeAt(0)}`,
            }),
          );
          this.send(...out);
          this.kill();
          return;
        }
      }
    }
    this.send(...out);
  }
}

/** A connector whose every connection is a new FakeBackend, logged in by pgwarden's real login code. */
export class FakeUpstream implements UpstreamConnector {
  readonly backends: FakeBackend[] = [];
  readonly cancels: { processId: number; secretKey: Buffer }[] = [];
  /** Set up each backend before pgwarden logs in (scripted results). */
  onBackend: (b: FakeBackend) => void = () => {};

  async connect(cfg: UpstreamConfig, startupParams: Record<string, string>): Promise<UpstreamConnection> {
    const b = new FakeBackend();
    this.onBackend(b);
    this.backends.push(b);
    return await loginUpstream(b.pgwardenEnd, cfg, startupParams, Date.now() + cfg.connectTimeout);
  }

  async cancel(_cfg: UpstreamConfig, processId: number, secretKey: Buffer): Promise<void> {
    this.cancels.push({ processId, secretKey });
  }
}
