// The README's quick start (`npm run demo`): pgwarden in front of npm's PostgreSQL, a token that works, refusals, a single-use task token from the exchange endpoint (the printed command run as printed), the printed approval round trip, and a clean stop.
import { execFile, spawn } from 'node:child_process';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import pg from 'pg';

const CLI = path.resolve('proxy/cli/main.ts');

/** Resolves once `re` matches the child's stdout so far (or rejects when the child exits or time runs out). */
function waitFor(out: () => string, child: ReturnType<typeof spawn>, re: RegExp, ms: number): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => done(new Error(`no ${re} within ${ms} ms; output so far:\n${out()}`)), ms);
    const check = () => {
      const m = re.exec(out());
      if (m) done(undefined, m);
    };
    const onExit = (code: number | null) => done(new Error(`demo exited (${code}) before ${re}:\n${out()}`));
    const done = (err?: Error, m?: RegExpExecArray) => {
      clearTimeout(t);
      child.stdout?.off('data', check);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(m as RegExpExecArray);
    };
    child.stdout?.on('data', check);
    child.once('exit', onExit);
    check();
  });
}

const BIN = path.resolve('bin/pgwarden.js');

/** Runs a command line the demo printed, as a user's shell would, with `npx pgwarden` as this checkout's bin. */
function shell(line: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const command = line.replaceAll('npx pgwarden ', `${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} `);
  return new Promise((resolve) => {
    execFile('bash', ['-c', command], { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr }),
    );
  });
}

/** Logs in with `password` and out again: undefined, or the login's error. */
async function loginError(port: number, password: string): Promise<{ code?: string; detail?: string } | undefined> {
  const c = new pg.Client({ host: '127.0.0.1', port, database: 'app', user: 'alice', password });
  c.on('error', () => {});
  try {
    await c.connect();
    await c.query('SELECT 1');
    return undefined;
  } catch (err) {
    return err as { code?: string; detail?: string };
  } finally {
    await c.end().catch(() => {});
  }
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

describe('the quick-start demo', () => {
  it('prints a token that logs in, refuses what the policy denies, a task token exchanged and used once, and stops everything on Ctrl-C', {
    timeout: 180_000,
  }, async () => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', CLI, 'demo', '--port', '0', '--metrics-port', '0', '--exchange-port', '0'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, NODE_ENV: 'production' },
      },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (out += d.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const pgPort = Number((await waitFor(() => out, child, /PostgreSQL (\d+) is up/, 60_000))[1]);
      const port = Number((await waitFor(() => out, child, /running on 127\.0\.0\.1:(\d+)/, 60_000))[1]);
      const token = (await waitFor(() => out, child, /export PGPASSWORD='([^']+)'/, 10_000))[1] as string;
      // The demo is the first thing a user sees: no warning or error lines before the instructions.
      expect(out).not.toMatch(/"level":(40|50|60)/);
      const c = new pg.Client({ host: '127.0.0.1', port, database: 'app', user: 'alice', password: token });
      await c.connect();
      try {
        // The commands the demo prints first: scope discovery.
        expect(out).toContain('-c "SELECT * FROM pgwarden.scope"');
        const scope = (await c.query('SELECT DISTINCT table_name FROM pgwarden.scope ORDER BY 1')).rows.map(
          (r) => r.table_name,
        );
        expect(scope).toEqual(['customers', 'orders']);
        expect((await c.query('SELECT sub, role FROM pgwarden.session')).rows).toEqual([
          { sub: 'alice', role: 'analyst' },
        ]);
        expect((await c.query("SELECT current_setting('pgwarden.sub') AS sub")).rows[0].sub).toBe('alice');
        expect((await c.query('SELECT id, total, status FROM orders ORDER BY id LIMIT 5')).rows.length).toBeGreaterThan(
          0,
        );
        await expect(c.query('SELECT ssn FROM customers')).rejects.toMatchObject({ code: '42501' });
        await expect(c.query('DELETE FROM orders')).rejects.toMatchObject({ code: '42501' });
        expect((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n).toBeGreaterThan(0);
      } finally {
        await c.end();
      }
      // The task token it prints how to get: the exchange, as the printed command makes it, then one use.
      const [, url, file] = (await waitFor(
        () => out,
        child,
        /token exchange --url (http:\/\/127\.0\.0\.1:\d+) --subject-token-file (\S+) --role analyst/,
        10_000,
      )) as unknown as [string, string, string];
      const res = await fetch(`${url}/token`, {
        method: 'POST',
        body: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
          subject_token: readFileSync(file, 'utf8').trim(),
          role: 'analyst',
          narrow: '{"relations":["public.orders"]}',
          ttl: '300',
          single_use: 'true',
        }),
      });
      expect(res.status).toBe(200);
      const task = ((await res.json()) as { access_token: string }).access_token;
      const t = new pg.Client({ host: '127.0.0.1', port, database: 'app', user: 'alice', password: task });
      await t.connect();
      try {
        const tables = (await t.query('SELECT DISTINCT table_name FROM pgwarden.scope ORDER BY 1')).rows;
        expect(tables.map((r) => r.table_name)).toEqual(['orders']);
      } finally {
        await t.end();
      }
      const again = new pg.Client({ host: '127.0.0.1', port, database: 'app', user: 'alice', password: task });
      await expect(again.connect()).rejects.toMatchObject({ code: '28000' });

      // The printed command itself, run as a shell would: its token logs in once, and a second login is refused
      // with reason credential_used.
      const printed = (
        await waitFor(() => out, child, /export PGPASSWORD=\$\((npx pgwarden token exchange [^)]+)\)/, 10_000)
      )[1] as string;
      const exchanged = await shell(printed);
      expect(exchanged).toMatchObject({ code: 0, stderr: '' });
      const once = exchanged.stdout.trim();
      expect(await loginError(port, once)).toBeUndefined();
      const used = await loginError(port, once);
      expect(used?.code).toBe('28000');
      expect(used?.detail).toMatch(/^reason=credential_used/);

      // The approval round trip, as printed: pending, the lead lists and approves, alice retrieves once.
      const lines = out.split('\n').map((l) => l.trim().replace(/\s+#.*$/, ''));
      const wide = lines.find((l) => l.startsWith('npx pgwarden token exchange') && l.includes('--role support'));
      const list = lines.find((l) => l.startsWith('npx pgwarden approve --list'));
      const approve = lines.find((l) => l.startsWith('npx pgwarden approve APPROVAL_ID'));
      const retrieve = /export PGPASSWORD=\$\((npx pgwarden token exchange [^)]+--approval-id APPROVAL_ID)\)/.exec(
        out,
      )?.[1];
      expect([wide, list, approve, retrieve].every((l) => l !== undefined)).toBe(true);
      const pending = await shell(wide as string);
      expect(pending.code).toBe(3);
      const id = /approval id: (apr_[A-Za-z0-9_-]+)/.exec(pending.stderr)?.[1] as string;
      expect(id).toBeDefined();
      expect((await shell(list as string)).stdout).toContain(id);
      const approved = await shell((approve as string).replace('APPROVAL_ID', id));
      expect(approved.code).toBe(0);
      expect(approved.stdout).toContain('decided by dave');
      const retrieved = await shell((retrieve as string).replace('APPROVAL_ID', id));
      expect(retrieved.code).toBe(0);
      const support = new pg.Client({
        host: '127.0.0.1',
        port,
        database: 'app',
        user: 'alice',
        password: retrieved.stdout.trim(),
      });
      await support.connect();
      try {
        expect((await support.query('SELECT name, ssn FROM customers LIMIT 3')).rows).toHaveLength(3);
      } finally {
        await support.end();
      }
      expect((await shell((retrieve as string).replace('APPROVAL_ID', id))).stderr).toMatch(/already retrieved/);
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(out).toContain('nothing left running');
      expect(await portOpen(pgPort)).toBe(false);
    } finally {
      if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
    }
  });
});
