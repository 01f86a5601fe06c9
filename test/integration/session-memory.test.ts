// What a session keeps per named object is bounded: prepared statement text has a cap (54000 past it), DEALLOCATE and Close give it back, and portals go with their transaction.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_RETAINED_SQL } from '../../proxy/session/session.ts';
import { RawClient, bind, closeMessage, errorCode, execute, flush, parse, query, sync } from '../helpers/raw-client.ts';
import postgres from 'postgres';
import { startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

const POLICY = `roles:
  bulk:
    readOnly: true
    relations: [public.orders]
  loader:
    readOnly: false
    relations: [public.canary]
    write: { statements: [copy_from], relations: [public.canary] }
    catalog: introspection
`;

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy({ policy: POLICY });
});
afterAll(async () => {
  await tp?.close();
});

/** Sends `msgs` and collects every message up to the next ReadyForQuery: [type, SQLSTATE for errors]. */
async function roundTrip(c: RawClient, ...msgs: Buffer[]): Promise<[string, string | undefined][]> {
  const seen: [string, string | undefined][] = [];
  c.onMessage = (type, body) => seen.push([type, type === 'E' ? errorCode(body) : undefined]);
  const done = c.next((t) => t === 'Z');
  c.socket.write(Buffer.concat(msgs));
  await done;
  return seen;
}

describe('per-session memory of named objects', () => {
  it(`named statements keep at most ${MAX_RETAINED_SQL} characters of text: the next Parse is refused (54000) until some are closed or deallocated`, {
    timeout: 120_000,
  }, async () => {
    const c = await RawClient.connect(tp.proxy.port, await tp.token({ role: 'bulk' }));
    try {
      const pad = 'x'.repeat(1_000_000);
      // A line comment: the cheapest padding for the analyses to get through.
      const text = (i: number) => `SELECT ${i} AS n -- ${pad}`;
      const fits = Math.floor(MAX_RETAINED_SQL / text(10).length);
      for (let i = 0; i < fits; i++)
        expect(await roundTrip(c, parse(`big${i}`, text(i)), sync())).toEqual([
          ['1', undefined],
          ['Z', undefined],
        ]);
      expect(await roundTrip(c, parse(`big${fits}`, text(fits)), sync())).toEqual([
        ['E', '54000'],
        ['Z', undefined],
      ]);
      // The session is still usable, and unnamed statements are not counted.
      expect((await roundTrip(c, parse('', 'SELECT 1'), bind('', ''), execute(''), sync())).map(([t]) => t)).toEqual([
        '1',
        '2',
        'D',
        'C',
        'Z',
      ]);
      // Close gives text back…
      expect(await roundTrip(c, closeMessage('S', 'big0'), sync())).toEqual([
        ['3', undefined],
        ['Z', undefined],
      ]);
      expect(await roundTrip(c, parse(`big${fits}`, text(fits)), sync())).toEqual([
        ['1', undefined],
        ['Z', undefined],
      ]);
      // …and so does DEALLOCATE, which drops Parse-made statements too.
      expect((await roundTrip(c, query('DEALLOCATE big1'))).map(([t]) => t)).toEqual(['C', 'Z']);
      expect(await roundTrip(c, parse(`big${fits + 1}`, text(fits + 1)), sync())).toEqual([
        ['1', undefined],
        ['Z', undefined],
      ]);
      // A statement refused for space was never created upstream: binding it fails.
      expect((await roundTrip(c, bind('', 'big1'), execute(''), sync()))[0]).toEqual(['E', '42501']);
    } finally {
      c.close();
    }
  });

  it('a portal bound and flushed (no Sync yet) is still there for its Execute; portals of finished transactions are forgotten', async () => {
    const c = await RawClient.connect(tp.proxy.port, await tp.token({ role: 'bulk' }));
    try {
      const bound = c.next((t) => t === '2');
      c.socket.write(Buffer.concat([parse('s', 'SELECT 42 AS n'), bind('p1', 's'), flush()]));
      await bound;
      expect((await roundTrip(c, execute('p1'), sync())).map(([t]) => t)).toEqual(['D', 'C', 'Z']);
      // p1 ended with its implicit transaction: PostgreSQL and pgwarden both refuse to execute it now.
      expect((await roundTrip(c, execute('p1'), sync()))[0]?.[0]).toBe('E');
      // In an explicit transaction, a portal outlives Syncs until COMMIT.
      await roundTrip(c, query('BEGIN'));
      await roundTrip(c, bind('p2', 's'), sync());
      expect((await roundTrip(c, execute('p2'), sync())).map(([t]) => t)).toEqual(['D', 'C', 'Z']);
      await roundTrip(c, query('COMMIT'));
    } finally {
      c.close();
    }
  });

  it('COPY FROM STDIN: a CopyData message of 900 kB streams through in parts and the row arrives intact', async () => {
    const sql = postgres({
      host: '127.0.0.1',
      port: tp.proxy.port,
      user: 'alice',
      database: 'app',
      pass: await tp.token({ role: 'loader' }),
      max: 1,
      onnotice: () => {},
    });
    const su = await superClient();
    try {
      const note = Array.from({ length: 90_000 }, (_, i) => String(i % 10_000).padStart(10, '.')).join('');
      const w = await sql`COPY public.canary (id, note) FROM STDIN`.writable();
      await new Promise<void>((resolve, reject) => {
        w.on('error', reject);
        w.on('finish', resolve);
        // One write is one CopyData message of ~900 kB.
        w.write(`9300\t${note}\n`);
        w.end();
      });
      const r = await su.query('SELECT note FROM public.canary WHERE id = 9300');
      expect(r.rows[0]?.note).toBe(note);
    } finally {
      await su.query('DELETE FROM public.canary WHERE id = 9300').catch(() => {});
      await su.end();
      await sql.end();
    }
  });
});
