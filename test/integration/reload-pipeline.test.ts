// A policy reload landing inside an open extended-protocol batch (between Parse and Bind), against the real Postgres: the client gets exactly the replies PostgreSQL would send, and every Sync its ReadyForQuery.
//
// The proxy used to send its own Close and Sync (closing the statement the reload revoked) as soon as nothing was
// outstanding, even inside the client's batch: PostgreSQL then stopped skipping after the refusal and answered the
// rest of the batch (34000 for the Describe of a portal that never was), and drivers counting replies waited forever.
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { DEFAULT_POLICY, canaryCount, startTestProxy, type TestProxy } from '../helpers/proxy.ts';
import { Bytes, startupPacket, typed } from '../helpers/bytes.ts';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy();
});
afterAll(async () => {
  await tp?.close();
});
afterEach(async () => {
  await setPolicy(DEFAULT_POLICY);
});

async function setPolicy(text: string): Promise<void> {
  writeFileSync(tp.policyFile, text);
  await tp.proxy.reload();
}

const NO_CUSTOMERS = DEFAULT_POLICY.replace(
  'relations: [public.orders, public.customers]',
  'relations: [public.orders]',
).replace('    deniedColumns: { public.customers: [ssn] }\n', '');
/** The same rules under a new version: every prepared statement is decided again, and stays allowed. */
const SAME_AGAIN = `${DEFAULT_POLICY}\n# reloaded\n`;

/** A client whose every message is written by hand; `replies` waits (hang guard) for the given number of ReadyForQuery. */
class Raw {
  private buf = Buffer.alloc(0);
  readonly got: { type: string; body: Buffer }[] = [];
  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      while (this.buf.length >= 5) {
        const len = this.buf.readInt32BE(1);
        if (this.buf.length < 1 + len) break;
        this.got.push({ type: String.fromCharCode(this.buf[0] ?? 0), body: this.buf.subarray(5, 1 + len) });
        this.buf = this.buf.subarray(1 + len);
      }
    });
  }
  static async open(port: number, token: string): Promise<Raw> {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    const c = new Raw(sock);
    sock.write(
      startupPacket([
        ['user', 'alice'],
        ['database', 'app'],
      ]),
    );
    await c.until(() => c.got.some((m) => m.type === 'R'));
    sock.write(typed('p', new Bytes().cstr(token)));
    await c.until(() => c.got.some((m) => m.type === 'Z'));
    c.got.length = 0;
    return c;
  }
  async until(pred: () => boolean, ms = 5_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`no reply in ${ms} ms: got ${this.types()}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  send(...frames: Buffer[]): void {
    this.sock.write(Buffer.concat(frames));
  }
  types(): string {
    return this.got.map((m) => m.type).join('');
  }
  codes(): string[] {
    return this.got
      .filter((m) => m.type === 'E')
      .map((m) => {
        const i = m.body.indexOf(Buffer.from([0x43]));
        return m.body.subarray(i + 1, m.body.indexOf(0, i)).toString('utf8');
      });
  }
  end(): void {
    this.sock.destroy();
  }
}

const parseMsg = (name: string, sql: string) => typed('P', new Bytes().cstr(name).cstr(sql).i16(0));
const bindMsg = (portal: string, name: string) => typed('B', new Bytes().cstr(portal).cstr(name).i16(0).i16(0).i16(0));
const describePortal = (portal: string) => typed('D', new Bytes().u8(0x50).cstr(portal));
const executeMsg = (portal: string) => typed('E', new Bytes().cstr(portal).i32(0));
const FLUSH = typed('H');
const SYNC = typed('S');

describe('a reload between Parse and Bind of one open batch', () => {
  it('that revokes the statement: one 42501 at the Bind, PostgreSQL skips the rest, one ReadyForQuery; the session goes on', async () => {
    const canary = await canaryCount();
    const raw = await Raw.open(tp.proxy.port, await tp.token());
    try {
      raw.send(parseMsg('s1', 'SELECT name FROM customers ORDER BY id'), FLUSH);
      await raw.until(() => raw.types() === '1');
      await setPolicy(NO_CUSTOMERS);
      // The refusal arrives while the batch is still open, with nothing outstanding: then the rest of it.
      raw.send(bindMsg('', 's1'), FLUSH);
      await raw.until(() => raw.types() === '1E');
      raw.send(describePortal(''), executeMsg(''), SYNC);
      await raw.until(() => raw.got.some((m) => m.type === 'Z'));
      // Before the fix: 1 E E Z (pgwarden's own Sync ended the skipping, and the Describe failed with 34000).
      await new Promise((r) => setTimeout(r, 100));
      expect(raw.types()).toBe('1EZ');
      expect(raw.codes()).toEqual(['42501']);
      // The batch's transaction was never split: the next one runs, and s1 stays refused.
      raw.got.length = 0;
      raw.send(parseMsg('', 'SELECT count(*) FROM orders'), bindMsg('', ''), executeMsg(''), SYNC);
      await raw.until(() => raw.got.some((m) => m.type === 'Z'));
      expect(raw.types()).toBe('12DCZ');
      raw.got.length = 0;
      raw.send(bindMsg('', 's1'), executeMsg(''), SYNC);
      await raw.until(() => raw.got.some((m) => m.type === 'Z'));
      expect(raw.codes()).toEqual(['42501']);
      expect(await canaryCount()).toBe(canary);
    } finally {
      raw.end();
    }
  });

  it('that changes nothing: the batch is answered as without the reload', async () => {
    const raw = await Raw.open(tp.proxy.port, await tp.token());
    try {
      raw.send(parseMsg('s2', 'SELECT id FROM orders ORDER BY id LIMIT 3'), FLUSH);
      await raw.until(() => raw.types() === '1');
      await setPolicy(SAME_AGAIN);
      raw.send(bindMsg('', 's2'), describePortal(''), executeMsg(''), SYNC);
      await raw.until(() => raw.got.some((m) => m.type === 'Z'));
      expect(raw.types()).toBe('12TDDDCZ');
    } finally {
      raw.end();
    }
  });
});

describe('a Parse or Close that PostgreSQL fails or skips leaves the name as it was', () => {
  const closeStatement = (name: string) => typed('C', new Bytes().u8(0x53).cstr(name));
  for (const how of ['skipped after an error', 'refused as already existing'] as const)
    it(`${how}: after a reload revoking the old statement, a Bind of the name is refused, never runs it`, async () => {
      const raw = await Raw.open(tp.proxy.port, await tp.token());
      try {
        raw.send(parseMsg('s3', 'SELECT name FROM customers ORDER BY id'), SYNC);
        await raw.until(() => raw.types() === '1Z');
        raw.got.length = 0;
        // Either way PostgreSQL keeps s3 as the customers query while pgwarden saw a Parse of an orders query.
        raw.send(
          ...(how === 'skipped after an error'
            ? [parseMsg('', 'SELECT 1/0 FROM orders'), bindMsg('', ''), executeMsg(''), closeStatement('s3')]
            : []),
          parseMsg('s3', 'SELECT id FROM orders ORDER BY id LIMIT 1'),
          SYNC,
        );
        await raw.until(() => raw.got.some((m) => m.type === 'Z'));
        raw.got.length = 0;
        await setPolicy(NO_CUSTOMERS);
        raw.send(bindMsg('', 's3'), executeMsg(''), SYNC);
        await raw.until(() => raw.got.some((m) => m.type === 'Z'));
        // Before the fix: 2, 50 rows of customers, C.
        expect(raw.got.filter((m) => m.type === 'D')).toHaveLength(0);
        expect(raw.codes()).toEqual(['42501']);
      } finally {
        raw.end();
      }
    });
});

describe('a Bind that PostgreSQL skips leaves the portal as it was', () => {
  it('a portal kept by ROLLBACK TO SAVEPOINT is executed as what it is: refused after a reload revoking it', async () => {
    const raw = await Raw.open(tp.proxy.port, await tp.token());
    const query = (sql: string) => typed('Q', new Bytes().cstr(sql));
    const step = async (...frames: Buffer[]) => {
      raw.got.length = 0;
      raw.send(...frames);
      await raw.until(() => raw.got.some((m) => m.type === 'Z'));
      return raw.types();
    };
    try {
      expect(await step(query('BEGIN'))).toBe('CZ');
      // p4 (customers) made before the savepoint: it survives ROLLBACK TO.
      expect(await step(parseMsg('s4', 'SELECT name FROM customers ORDER BY id'), bindMsg('p4', 's4'), SYNC)).toBe(
        '12Z',
      );
      expect(await step(query('SAVEPOINT a'))).toBe('CZ');
      expect(await step(parseMsg('s5', 'SELECT id FROM orders ORDER BY id LIMIT 1'), SYNC)).toBe('1Z');
      // The Bind of p4 to s5 is skipped after the error: p4 is still the customers portal.
      expect(
        await step(parseMsg('', 'SELECT 1/0 FROM orders'), bindMsg('', ''), executeMsg(''), bindMsg('p4', 's5'), SYNC),
      ).toBe('1EZ');
      expect(await step(query('ROLLBACK TO a'))).toBe('CZ');
      await setPolicy(NO_CUSTOMERS);
      await step(executeMsg('p4'), SYNC);
      // Before the fix: 50 rows of customers, decided as the skipped Bind's orders query.
      expect(raw.got.filter((m) => m.type === 'D')).toHaveLength(0);
      expect(raw.codes()).toEqual(['42501']);
      await step(query('ROLLBACK'));
    } finally {
      raw.end();
    }
  });
});

describe('postgres.js pipelining prepared statements while reloads land', () => {
  it('every query settles (rows or 42501), none hangs', async () => {
    const sql = postgres({
      host: '127.0.0.1',
      port: tp.proxy.port,
      user: 'alice',
      database: 'app',
      pass: await tp.token(),
      max: 1,
      prepare: true,
      onnotice: () => {},
    });
    const canary = await canaryCount();
    try {
      // Prepared once, so every later use is a Bind of a named statement decided under an older version.
      await sql`SELECT name FROM customers WHERE id = ${1}`;
      await sql`SELECT id FROM orders WHERE id = ${1}`;
      const settled: Promise<string>[] = [];
      for (let round = 0; round < 6; round++) {
        for (let i = 1; i <= 5; i++) {
          settled.push(
            sql`SELECT name FROM customers WHERE id = ${i}`.then(
              () => 'ok',
              (e: { code?: string }) => String(e.code),
            ),
            sql`SELECT id FROM orders WHERE id = ${i}`.then(
              () => 'ok',
              (e: { code?: string }) => String(e.code),
            ),
          );
        }
        // A reload while the pipeline is in flight: revoking customers, then giving it back.
        void setPolicy(round % 2 === 0 ? NO_CUSTOMERS : DEFAULT_POLICY);
      }
      let timer: NodeJS.Timeout | undefined;
      const guard = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('a pipelined query got no answer (hang)')), 20_000);
      });
      const outcomes = await Promise.race([Promise.all(settled), guard]).finally(() => clearTimeout(timer));
      expect(outcomes).toHaveLength(60);
      for (const o of outcomes) expect(['ok', '42501']).toContain(o);
      // orders is never revoked.
      expect(outcomes.filter((_, i) => i % 2 === 1).every((o) => o === 'ok')).toBe(true);
      expect(await canaryCount()).toBe(canary);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});
