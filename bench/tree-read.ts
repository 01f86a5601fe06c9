// Main-thread cost of reading and walking the analysed trees of allowed long statements (IN lists, VALUES lists, arrays): at once vs in 3 ms slices.
//
//   node --import tsx bench/tree-read.ts [1000,5000,20000,50000,100000]   (element counts)
//
// Each tree is PostgreSQL's own (debug_print_parse on an embedded server, stopped at the end). "walk" is
// collectReferences' first walk; the slices run as proxy/session/server-check.ts runs them, with setImmediate between.
import pg from 'pg';
import { startPostgres } from '../proxy/embedded/postgres.ts';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER, sampleSchemaSql } from '../proxy/embedded/sample.ts';
import { IncrementalTreeRead, readNodeTree } from '../policy/pgnode.ts';
import { collectReferences, incrementalReferenceWalk } from '../policy/server-analysis.ts';

async function parseTree(client: pg.Client, sql: string): Promise<string | undefined> {
  const con = (client as unknown as { connection: import('node:events').EventEmitter & Record<string, any> })
    .connection;
  return await new Promise((resolve) => {
    let tree: string | undefined;
    const onNotice = (msg: { message?: string; detail?: string }) => {
      if (msg.message === 'parse tree:') tree = msg.detail;
    };
    const onError = (msg: { message?: string }) => console.error('error', msg.message);
    const onReady = () => {
      con.off('notice', onNotice);
      con.off('errorMessage', onError);
      con.off('readyForQuery', onReady);
      resolve(tree);
    };
    con.on('notice', onNotice);
    con.on('errorMessage', onError);
    con.on('readyForQuery', onReady);
    con.parse({ text: sql, types: [] });
    con.sync();
  });
}

const noCat = { relations: new Map(), functions: new Map(), operators: new Map(), types: new Map() };
const ints = (n: number) => Array.from({ length: n }, (_, i) => i + 1).join(',');
const shapes: Record<string, (n: number) => string> = {
  in_list: (n) => `SELECT * FROM orders WHERE id IN (${ints(n)})`,
  values: (n) => `SELECT * FROM (VALUES ${Array.from({ length: n }, (_, i) => `(${i + 1})`).join(',')}) v(x)`,
  array: (n) => `SELECT * FROM orders WHERE id = ANY(ARRAY[${ints(n)}])`,
};

const server = await startPostgres({});
try {
  const admin = new pg.Client({ connectionString: server.url() });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${SAMPLE_DATABASE}`);
  await admin.end();
  const app = new pg.Client({ connectionString: server.url(SAMPLE_DATABASE) });
  await app.connect();
  await app.query(sampleSchemaSql('pw'));
  await app.end();
  const client = new pg.Client({
    host: server.host,
    port: server.port,
    user: SAMPLE_UPSTREAM_USER,
    password: 'pw',
    database: SAMPLE_DATABASE,
  });
  client.on('error', () => {});
  await client.connect();
  await client.query('SET debug_print_parse = on; SET debug_pretty_print = off; SET client_min_messages = log');
  const con = (client as unknown as { connection: import('node:events').EventEmitter }).connection;
  for (const ev of ['notice', 'errorMessage', 'readyForQuery', 'parseComplete']) con.removeAllListeners(ev);
  console.log(
    '| shape | elements | SQL bytes | tree bytes | read at once ms | walk at once ms | in slices: total ms, slices, longest slice ms |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  for (const [shape, gen] of Object.entries(shapes)) {
    for (const n of (process.argv[2] ?? '1000,5000,20000,50000,100000').split(',').map(Number)) {
      const sql = gen(n);
      if (sql.length > 1024 * 1024) continue;
      const raw = await parseTree(client, sql);
      if (raw === undefined) continue;
      const text = Buffer.from(raw, 'utf8').toString('latin1');
      const reads: number[] = [];
      const walks: number[] = [];
      let longest = 0;
      let total = 0;
      let slices = 0;
      for (let rep = 0; rep < 3; rep++) {
        let t = performance.now();
        const tree = readNodeTree(text);
        reads.push(performance.now() - t);
        t = performance.now();
        collectReferences([tree], noCat);
        walks.push(performance.now() - t);
        // In slices, as proxy/session/server-check.ts runs it (3 ms, setImmediate between).
        const t0 = performance.now();
        const read = new IncrementalTreeRead(text);
        let s = 0;
        for (;;) {
          const a = performance.now();
          const done = read.run(a + 3);
          longest = Math.max(longest, performance.now() - a);
          s++;
          if (done) break;
          await new Promise((r) => setImmediate(r));
        }
        const walk = incrementalReferenceWalk(read.value);
        for (;;) {
          const a = performance.now();
          const done = walk.run(a + 3);
          longest = Math.max(longest, performance.now() - a);
          s++;
          if (done) break;
          await new Promise((r) => setImmediate(r));
        }
        total += performance.now() - t0;
        slices = s;
      }
      const med = (xs: number[]) => xs.sort((a, b) => a - b)[1]!.toFixed(0);
      console.log(
        `| ${shape} | ${n.toLocaleString('en')} | ${(sql.length / 1024).toFixed(0)} KiB | ${(text.length / 2 ** 20).toFixed(1)} MiB | ${med(reads)} | ${med(walks)} | ${(total / 3).toFixed(0)}, ${slices}, ${longest.toFixed(1)} |`,
      );
    }
  }
  await client.end().catch(() => {});
} finally {
  await server.stop();
}
