// A truncated result is visible to programs: the WARNING notice (01000, reason=limit_reached first in DETAIL) as node-postgres, postgres.js, psycopg and pgJDBC surface it, the honest tag, and the audit trail's truncated flag.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectPg, startTestProxy, type TestProxy } from '../helpers/proxy.ts';
import { until } from '../helpers/until.ts';

// DEFAULT_POLICY's analyst: maxRows 100, onRowCap truncate; public.orders has 500 rows.
const CAPPED_SQL = 'SELECT id FROM orders ORDER BY id';
const DETAIL = 'reason=limit_reached\nmax_rows=100\nrule: role maxRows with onRowCap: truncate';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy();
});
afterAll(async () => {
  await tp?.close();
});

/** Runs a program to completion without blocking the event loop (the proxy runs in this process). */
function run(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { env, timeout: 50_000, encoding: 'utf8' }, (_err, stdout, stderr) =>
      resolve({ code: child.exitCode, stdout, stderr }),
    );
  });
}

describe('node-postgres', () => {
  it('emits the notice on the client (code, severity, detail), and rowCount is the rows sent', async () => {
    const c = await connectPg(tp, await tp.token({ sub: 'rcv-pg' }));
    const notices: { code?: string; severity?: string; message?: string; detail?: string }[] = [];
    c.on('notice', (n) => notices.push(n));
    try {
      const r = await c.query(CAPPED_SQL);
      expect([r.rows.length, r.rowCount, r.command]).toEqual([100, 100, 'SELECT']);
      expect(notices.map((n) => [n.code, n.severity, n.message, n.detail])).toEqual([
        ['01000', 'WARNING', 'pgwarden truncated the result at 100 rows', DETAIL],
      ]);
      // The extended protocol the same way.
      await c.query({ text: 'SELECT id FROM orders WHERE id > $1', values: [0] });
      expect(notices).toHaveLength(2);
      expect(notices[1]?.detail?.split('\n')[0]).toBe('reason=limit_reached');
    } finally {
      await c.end();
    }
  });

  it('records truncated: true on the statement_end audit event', async () => {
    const c = await connectPg(tp, await tp.token({ sub: 'rcv-audit' }));
    try {
      await c.query(CAPPED_SQL);
    } finally {
      await c.end();
    }
    const end = (): Record<string, unknown> | undefined =>
      tp
        .auditLines()
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((e) => e.event === 'statement_end' && e.sub === 'rcv-audit');
    await until(() => end() !== undefined);
    expect(end()).toMatchObject({ rows: 100, truncated: true });
  });
});

describe('postgres.js', () => {
  it('passes the notice to onnotice, and count is the rows sent', async () => {
    const notices: postgres.Notice[] = [];
    const sql = postgres({
      host: '127.0.0.1',
      port: tp.proxy.port,
      database: 'app',
      username: 'alice',
      password: await tp.token({ sub: 'rcv-js' }),
      max: 1,
      fetch_types: false,
      onnotice: (n) => notices.push(n),
    });
    try {
      const rows = await sql.unsafe(CAPPED_SQL);
      expect([rows.length, rows.count, rows.command]).toEqual([100, 100, 'SELECT']);
      expect(notices.map((n) => [n.code, n.severity, n.detail])).toEqual([['01000', 'WARNING', DETAIL]]);
    } finally {
      await sql.end();
    }
  });
});

// Debian's interpreter, where python3-psycopg is installed.
const PYTHON = '/usr/bin/python3';
const hasPsycopg = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import psycopg']).status === 0;

describe.skipIf(!hasPsycopg)('psycopg 3', () => {
  it("calls the connection's notice handler with the Diagnostic, and rowcount is the rows sent (the tag parses)", async () => {
    const script = `
import json, sys, psycopg
got = []
with psycopg.connect(sys.argv[1]) as conn:
    conn.add_notice_handler(lambda d: got.append([d.sqlstate, d.severity, d.message_detail]))
    cur = conn.execute(${JSON.stringify(CAPPED_SQL)})
    rows = cur.fetchall()
    print(json.dumps({"rows": len(rows), "rowcount": cur.rowcount, "notices": got}))
`;
    const dsn = `host=127.0.0.1 port=${tp.proxy.port} dbname=app user=alice sslmode=disable password=${await tp.token({ sub: 'rcv-py' })}`;
    const out = await run(PYTHON, ['-c', script, dsn]);
    expect(out.code, out.stderr).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual({ rows: 100, rowcount: 100, notices: [['01000', 'WARNING', DETAIL]] });
  });
});

const JDBC_JAR = '/usr/share/java/postgresql.jar';
const hasJdbc = existsSync(JDBC_JAR) && spawnSync('java', ['-version']).status === 0;

describe.skipIf(!hasJdbc)('pgJDBC', () => {
  it('chains the notice as an SQLWarning on the Statement (SQLState 01000), and the tag parses', {
    timeout: 60_000,
  }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-jdbc-'));
    try {
      const src = path.join(dir, 'RowCap.java');
      writeFileSync(
        src,
        `import java.sql.*;
public class RowCap {
  public static void main(String[] a) throws Exception {
    try (Connection c = DriverManager.getConnection(a[0], a[1], a[2])) {
      for (boolean prepared : new boolean[] { false, true }) {
        Statement s = prepared ? c.prepareStatement(${JSON.stringify(CAPPED_SQL)}) : c.createStatement();
        int n = 0;
        try (ResultSet r = prepared ? ((PreparedStatement) s).executeQuery() : s.executeQuery(${JSON.stringify(CAPPED_SQL)})) { while (r.next()) n++; }
        System.out.println(n);
        for (SQLWarning w = s.getWarnings(); w != null; w = w.getNextWarning()) {
          System.out.println(w.getSQLState() + " " + w.getMessage().split("\\n")[0]);
          if (w instanceof org.postgresql.util.PSQLWarning) System.out.println(((org.postgresql.util.PSQLWarning) w).getServerErrorMessage().getDetail().split("\\n")[0]);
        }
        s.close();
      }
    }
  }
}
`,
      );
      const url = `jdbc:postgresql://127.0.0.1:${tp.proxy.port}/app?sslmode=disable`;
      const out = await run('java', ['-cp', JDBC_JAR, src, url, 'alice', await tp.token({ sub: 'rcv-jdbc' })]);
      expect(out.code, out.stderr).toBe(0);
      const once = ['100', '01000 pgwarden truncated the result at 100 rows', 'reason=limit_reached'];
      expect(out.stdout.trim().split('\n')).toEqual([...once, ...once]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
