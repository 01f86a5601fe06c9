// Backpressure both ways: a client that does not read costs pgwarden a bounded number of bytes, whatever the database sends, and still gets every byte.
import { createHash } from 'node:crypto';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import type { Session } from '../../proxy/session/session.ts';
import { MAX_PIPELINE_DEPTH } from '../../proxy/session/session.ts';
import { connectPg, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';
import { RawClient, bind, errorCode, execute, flush, parse, query, sync } from '../helpers/raw-client.ts';
import { until } from '../helpers/until.ts';

/** What a stalled session may hold in pgwarden's memory: "a few hundred KiB". */
const BOUND = 1024 * 1024;
/** 8-digit numbers 1..N laid end to end: every 8-byte position differs, so a lost, repeated or reordered piece shows. */
const VALUE_DIGITS = 8 * 1024 * 1024; // 64 MiB of text
const VALUE_SQL = `SELECT string_agg(lpad(i::text, 8, '0'), '') AS v FROM generate_series(1, ${VALUE_DIGITS}) i`;

function expectedDigest(): string {
  const h = createHash('sha256');
  const batch: string[] = [];
  for (let i = 1; i <= VALUE_DIGITS; i++) {
    batch.push(String(i).padStart(8, '0'));
    if (batch.length === 65536) {
      h.update(batch.join(''));
      batch.length = 0;
    }
  }
  h.update(batch.join(''));
  return h.digest('hex');
}

let tp: TestProxy;
let expected: string;
// No statementTimeout and no maxRows: the stall may last as long as the test wants, and no LIMIT is added.
const POLICY = `roles:
  bulk:
    readOnly: true
    relations: [public.orders]
`;

beforeAll(async () => {
  tp = await startTestProxy({ policy: POLICY });
  expected = expectedDigest();
});
afterAll(async () => {
  await tp?.close();
});

function onlySession(): Session {
  const live = [...tp.proxy.server.sessions].filter((s) => s.identity !== undefined && !s.isClosed);
  expect(live).toHaveLength(1);
  return live[0] as Session;
}

/** Waits until PostgreSQL's backend running `like` is blocked writing to pgwarden: backpressure reached the database. */
async function untilServerBlocked(like: string): Promise<void> {
  const su = await superClient();
  try {
    await until(
      async () => {
        const r = await su.query(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event = 'ClientWrite' AND query LIKE $1",
          [like],
        );
        return r.rows[0].n > 0;
      },
      60_000,
      50,
    );
  } finally {
    await su.end();
  }
}

/** The most the session holds over a short while (the stall is steady, but sample a few times). */
async function maxBuffered(s: Session, samples = 10): Promise<number> {
  let max = 0;
  for (let i = 0; i < samples; i++) {
    max = Math.max(max, s.bufferedBytes);
    await new Promise((r) => setTimeout(r, 30));
  }
  return max;
}

// Generating 64 MiB in PostgreSQL takes seconds on a busy 2-core machine; these bounds are hang guards.
describe('a client that stops reading', { timeout: 120_000 }, () => {
  it('a 64 MiB value: pgwarden holds under 1 MiB while the client does not read, then the client gets every byte (pg)', async () => {
    const c: pg.Client = await connectPg(tp, await tp.token({ role: 'bulk' }));
    try {
      const stream = (c as unknown as { connection: { stream: net.Socket } }).connection.stream;
      stream.pause();
      const result = c.query(VALUE_SQL);
      await untilServerBlocked('%string_agg(lpad%');
      const held = await maxBuffered(onlySession());
      expect(held).toBeLessThan(BOUND);
      // The same figure is exported for operators.
      const gauge = await tp.proxy.metrics.registry.getSingleMetric('pgwarden_session_buffered_bytes')?.get();
      const max = gauge?.values.find((v) => v.labels.stat === 'max')?.value;
      expect(max).toBeGreaterThan(0);
      expect(max).toBeLessThan(BOUND);
      stream.resume();
      const r = await result;
      const v = r.rows[0].v as string;
      expect(v.length).toBe(VALUE_DIGITS * 8);
      expect(createHash('sha256').update(v).digest('hex')).toBe(expected);
    } finally {
      await c.end();
    }
  });

  it('COPY … TO STDOUT of the same value: bounded while stalled, every byte once reading resumes', async () => {
    const c = await RawClient.connect(tp.proxy.port, await tp.token({ role: 'bulk' }));
    try {
      const h = createHash('sha256');
      let copied = 0;
      c.onMessage = (type, body) => {
        if (type !== 'd') return;
        // COPY's text format ends the row with a newline.
        const row = body[body.length - 1] === 0x0a ? body.subarray(0, body.length - 1) : body;
        h.update(row);
        copied += row.length;
      };
      c.socket.pause();
      const done = c.next((t) => t === 'Z');
      c.socket.write(query(`COPY (${VALUE_SQL}) TO STDOUT`));
      await untilServerBlocked('COPY (SELECT string_agg%');
      const held = await maxBuffered(onlySession());
      expect(held).toBeLessThan(BOUND);
      c.socket.resume();
      await done;
      expect(copied).toBe(VALUE_DIGITS * 8);
      expect(h.digest('hex')).toBe(expected);
    } finally {
      c.close();
    }
  });

  it('a pipelining client that writes 2,000 queries of 64 KiB results without reading: bounded, and every result arrives in order', async () => {
    const c = await RawClient.connect(tp.proxy.port, await tp.token({ role: 'bulk' }));
    try {
      const n = 2000;
      const rows: string[] = [];
      let ready = 0;
      c.onMessage = (type, body) => {
        if (type === 'D') {
          // One column: Int16 count, Int32 length, the text.
          const len = body.readInt32BE(2);
          rows.push(body.subarray(6, 6 + len).toString('latin1'));
        }
        if (type === 'Z') ready++;
      };
      c.socket.pause();
      const all: Buffer[] = [];
      for (let i = 0; i < n; i++) all.push(query(`SELECT repeat(chr(${65 + (i % 26)}), 65536) AS pad${i}`));
      const finished = new Promise<void>((resolve) => {
        const check = c.onMessage;
        c.onMessage = (type, body) => {
          check(type, body);
          if (type === 'Z' && ready === n) resolve();
        };
      });
      c.socket.write(Buffer.concat(all));
      await untilServerBlocked('SELECT repeat(chr(%');
      const s = onlySession();
      const held = await maxBuffered(s);
      expect(held).toBeLessThan(BOUND);
      expect(s.pendingResponses).toBeLessThanOrEqual(MAX_PIPELINE_DEPTH);
      c.socket.resume();
      await finished;
      expect(rows).toHaveLength(n);
      rows.forEach((row, i) => {
        expect(row.length).toBe(65536);
        expect(row[0]).toBe(String.fromCharCode(65 + (i % 26)));
      });
    } finally {
      c.close();
    }
  });

  it('a client flooding small queries without reading stops being read at MAX_PIPELINE_DEPTH responses due', async () => {
    const c = await RawClient.connect(tp.proxy.port, await tp.token({ role: 'bulk' }));
    try {
      const n = 30_000;
      let ready = 0;
      const finished = new Promise<void>((resolve) => {
        c.onMessage = (type) => {
          if (type === 'Z' && ++ready === n) resolve();
        };
      });
      c.socket.pause();
      const one = query('SELECT 1');
      c.socket.write(Buffer.concat(Array.from({ length: n }, () => one)));
      const s = onlySession();
      // The server answers quickly; wait until pgwarden has stopped reading the client (its depth stays put).
      await until(() => s.pendingResponses >= MAX_PIPELINE_DEPTH / 2, 20_000, 20);
      let maxDepth = 0;
      for (let i = 0; i < 20; i++) {
        maxDepth = Math.max(maxDepth, s.pendingResponses);
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(maxDepth).toBeLessThanOrEqual(MAX_PIPELINE_DEPTH);
      expect(await maxBuffered(s)).toBeLessThan(BOUND);
      c.socket.resume();
      await finished;
      expect(ready).toBe(n);
    } finally {
      c.close();
    }
  });

  it('an ErrorResponse far longer than 64 KiB (PostgreSQL quoting a 600 kB parameter) reaches the client cut, with its SQLSTATE, and the session goes on', async () => {
    const c: pg.Client = await connectPg(tp, await tp.token({ role: 'bulk' }));
    try {
      // A parameter, so the error comes from running the statement (a literal would fail pgwarden's analysis first).
      const err = await c.query('SELECT $1::int AS n', ['7x'.repeat(300_000)]).then(
        () => undefined,
        (e: { code?: string; message: string }) => e,
      );
      expect(err?.code).toBe('22P02');
      expect(err?.message.length ?? Infinity).toBeLessThan(64 * 1024);
      // It took the streamed path: held to 64 KiB as it arrived, not assembled whole.
      expect(tp.logs.some((l) => l.includes('upstream message cut to NOTICE_KEEP bytes'))).toBe(true);
      expect((await c.query('SELECT 41 + 1 AS n')).rows[0].n).toBe(42);
    } finally {
      await c.end();
    }
  });

  it('after an error in an extended batch, thousands of messages PostgreSQL discards until Sync neither stall the session nor queue up', async () => {
    const c = await RawClient.connect(tp.proxy.port, await tp.token({ role: 'bulk' }));
    try {
      const seen: [string, string | undefined][] = [];
      c.onMessage = (type, body) => seen.push([type, type === 'E' ? errorCode(body) : undefined]);
      // A Bind with too few parameters fails; no Sync yet, so PostgreSQL now discards everything until one.
      const failed = c.next((t) => t === 'E');
      c.socket.write(
        Buffer.concat([parse('s0', 'SELECT 1 AS n'), parse('s1', 'SELECT $1::int AS n'), bind('', 's1'), flush()]),
      );
      await failed;
      const flood: Buffer[] = [];
      for (let i = 0; i < 3 * MAX_PIPELINE_DEPTH; i++) flood.push(bind('', 's0'), execute(''));
      const ready = c.next((t) => t === 'Z');
      c.socket.write(Buffer.concat([...flood, sync()]));
      await ready;
      expect(seen.map(([t]) => t)).toEqual(['1', '1', 'E', 'Z']);
      expect(onlySession().pendingResponses).toBe(0);
      // The session goes on normally.
      seen.length = 0;
      const again = c.next((t) => t === 'Z');
      c.socket.write(query('SELECT 2 AS n'));
      await again;
      expect(seen.map(([t]) => t)).toEqual(['T', 'D', 'C', 'Z']);
    } finally {
      c.close();
    }
  });
});
