// Audit trail: event shapes, SQL modes (normalized hides literals), no token ever written, failure policy and rotation.
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { loadModule } from 'libpg-query';
import type { Identity } from '../../../proxy/auth/jwt.ts';
import { ProxyError } from '../../../lib/errors.ts';
import { createAudit, type Audit, type AuditOptions } from '../../../proxy/audit/sink.ts';
import { auditGate, withAuditGate } from '../../../proxy/audit/gate.ts';
import { auditSqlText, MAX_NORMALIZED_SQL_INPUT, needsCollapse, normalizeSql } from '../../../proxy/audit/sql-text.ts';
import { initParser } from '../../../policy/parser.ts';
import { fixed3, jsonString } from '../../../proxy/audit/events.ts';
import type { StatementGate } from '../../../proxy/session/gate.ts';
import type { Session } from '../../../proxy/session/session.ts';
import type { Decision, RolePolicy, SessionView } from '../../../policy/types.ts';
import { until } from '../../helpers/until.ts';

// A syntactically real JWT (header {"alg":"HS256","typ":"JWT"}); it must never show up in audit output.
const TOKEN =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInJvbGUiOiJhbmFseXN0In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    cb();
  }
  get events(): Record<string, unknown>[] {
    return this.text
      .split('\n')
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

const silent = { error: () => {}, warn: () => {}, info: () => {} } as unknown as NonNullable<AuditOptions['log']>;

function fakeSession(extra: Record<string, unknown> = {}): Session {
  const identity = {
    sub: 'alice',
    role: 'analyst',
    agent: 'report-bot',
    tenant: 'acme',
    jti: 'jti-1',
    iss: 'pgwarden-test',
    exp: 1_900_000_000,
    iat: 1_899_999_700,
    nbf: undefined,
    // Fields a careless refactor might add to an Identity: never copied to the trail.
    token: TOKEN,
    password: TOKEN,
    raw: { token: TOKEN },
  } as Identity;
  return {
    id: 'sess-1',
    remoteAddress: '127.0.0.1',
    identity,
    role: { name: 'analyst' } as RolePolicy,
    ...extra,
  } as unknown as Session;
}

const allow = (over: Partial<Extract<Decision, { allow: true }>> = {}): Decision => ({
  allow: true,
  ruleId: 'analyst.read',
  statements: [{ kind: 'SelectStmt', relations: ['public.orders', 'public.customers'], columns: [], functions: [] }],
  rewrittenSql: undefined,
  rowCap: undefined,
  effects: [],
  shadowDenied: undefined,
  ...over,
});

const deny: Decision = {
  allow: false,
  ruleId: 'analyst.readOnly',
  sqlstate: '42501',
  message: 'permission denied by pgwarden: DELETE is not allowed for read-only role "analyst"',
  detail: undefined,
  hint: undefined,
  reason: 'write_in_read_only',
  statements: [{ kind: 'DeleteStmt', relations: ['public.orders'], columns: [], functions: [] }],
};

const audits: Audit[] = [];
const dirs: string[] = [];

async function open(opts: Partial<AuditOptions> & { destination: AuditOptions['destination'] }): Promise<Audit> {
  const a = await createAudit({ sql: 'normalized', onFailure: 'refuse', log: silent, ...opts });
  audits.push(a);
  return a;
}

function tmpDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-audit-'));
  dirs.push(d);
  return d;
}

beforeAll(async () => {
  await loadModule();
  // Normalising by tokens reads them through the policy parser's scanner, as the proxy does (createProxy initialises it).
  await initParser();
});

afterEach(async () => {
  for (const a of audits.splice(0)) await a.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('event shapes', () => {
  it('writes session_start, statement (allow/deny/shadow_deny), session_end with identity fields', async () => {
    const out = new Capture();
    const audit = await open({ destination: out, policyVersion: () => 7 });
    const s = fakeSession();
    audit.events.loginSucceeded?.(s);
    audit.events.statementDecided?.(s, {
      seq: 1,
      mode: 'simple',
      sql: 'SELECT * FROM orders WHERE id = 5',
      decision: allow(),
      micros: 12.3456,
    });
    audit.events.statementDecided?.(s, { seq: 1, mode: 'parse', sql: 'DELETE FROM orders', decision: deny, micros: 3 });
    audit.events.statementDecided?.(s, {
      seq: 3,
      mode: 'bind',
      sql: 'SELECT 1',
      decision: allow({ shadowDenied: { reason: 'relation_not_allowed', message: 'm' } }),
      micros: 1,
    });
    audit.events.sessionEnded?.(s, 'client');
    const [start, st1, st2, st3, end] = out.events;

    const who = {
      sessionId: 'sess-1',
      clientAddress: '127.0.0.1',
      sub: 'alice',
      agent: 'report-bot',
      tenant: 'acme',
      role: 'analyst',
      jti: 'jti-1',
      tokenExp: new Date(1_900_000_000_000).toISOString(),
    };
    expect(start).toMatchObject({ event: 'session_start', auditVersion: 1, ...who });
    expect(typeof start?.['time']).toBe('string');
    expect(start).not.toHaveProperty('level');
    expect(start?.['source']).toBe('pgwarden-audit');
    expect(st1).toMatchObject({
      event: 'statement',
      ...who,
      mode: 'simple',
      kinds: ['SelectStmt'],
      relations: ['public.orders', 'public.customers'],
      sql: 'SELECT * FROM orders WHERE id = $1',
      decision: 'allow',
      rule: 'analyst.read',
      policyVersion: 7,
      decisionMicros: 12.346,
    });
    expect(st1).not.toHaveProperty('reason');
    expect(st2).toMatchObject({
      event: 'statement',
      decision: 'deny',
      reason: 'write_in_read_only',
      rule: 'analyst.readOnly',
      sqlstate: '42501',
      kinds: ['DeleteStmt'],
    });
    expect(st3).toMatchObject({
      event: 'statement',
      mode: 'bind',
      decision: 'shadow_deny',
      reason: 'relation_not_allowed',
    });
    expect(end).toMatchObject({ event: 'session_end', ...who, reason: 'client', statements: 3, denied: 1 });
    expect(typeof end?.['durationMs']).toBe('number');
  });

  it('writes login_refused with reason and SQLSTATE, and no session_end for a session that never logged in', async () => {
    const out = new Capture();
    const audit = await open({ destination: out });
    const s = fakeSession({ identity: undefined, role: undefined });
    audit.events.loginFailed?.(
      s,
      'expired',
      new ProxyError('ERR_TOKEN_INVALID', 'token expired at 2020-01-01T00:00:00.000Z'),
    );
    audit.events.sessionEnded?.(s, 'auth_failed');
    const events = out.events;
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      event: 'login_refused',
      sessionId: 'sess-1',
      clientAddress: '127.0.0.1',
      reason: 'expired',
      sqlstate: '28P01',
      code: 'ERR_TOKEN_INVALID',
      message: 'token expired at 2020-01-01T00:00:00.000Z',
    });
    expect(events[0]).not.toHaveProperty('sub');
  });

  it('writes policy_reload and revocation events', async () => {
    const out = new Capture();
    const audit = await open({ destination: out });
    audit.policyReloaded({
      version: 3,
      previousVersion: 2,
      reason: 'signal',
      digest: 'abc',
      removedRoles: ['ops'],
      sessionsEnded: 1,
    });
    audit.revocationChanged({
      source: 'file',
      entries: 1,
      added: [{ jti: 'j9', reason: 'leaked' }],
      removed: [],
      sessionsEnded: 2,
    });
    expect(out.events[0]).toMatchObject({
      event: 'policy_reload',
      version: 3,
      previousVersion: 2,
      reason: 'signal',
      removedRoles: ['ops'],
      sessionsEnded: 1,
    });
    expect(out.events[1]).toMatchObject({
      event: 'revocation',
      source: 'pgwarden-audit',
      revocationSource: 'file',
      entries: 1,
      added: [{ jti: 'j9', reason: 'leaked' }],
      sessionsEnded: 2,
    });
  });
});

describe('fixed3 (durations in statement events)', () => {
  it('writes exactly the JSON number Math.round(x * 1000) / 1000 is, for any duration', () => {
    const same = (x: number) => {
      const text = fixed3(x);
      expect(JSON.parse(text)).toBe(Math.round(x * 1000) / 1000);
      // No trailing zeros, no exponent below the integer fallback: what JSON.stringify writes for the same number.
      expect(text).toBe(JSON.stringify(Math.round(x * 1000) / 1000));
    };
    for (const x of [
      0, 0.0004, 0.0005, 0.001, 0.01, 0.1, 0.5, 1, 1.05, 2.3, 12.3456, 999.9995, 1073741.823, 1073741.824, 5e9,
    ])
      same(x);
    fc.assert(fc.property(fc.double({ min: 0, max: 2e6, noNaN: true }), same), { numRuns: 20_000 });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0x3fffffff }), (n) => same(n / 1000)),
      { numRuns: 20_000 },
    );
  });

  it('never writes invalid JSON for a number JSON cannot hold', () => {
    expect(fixed3(Number.NaN)).toBe('null');
    expect(fixed3(Number.POSITIVE_INFINITY)).toBe('null');
  });
});

describe('hand-written string helpers of statement events', () => {
  // Whitespace of every kind \s knows, quotes, backslashes, control characters, surrogates (paired and lone).
  const alphabet = [
    'a',
    'Z',
    '0',
    ' ',
    '  ',
    '\t',
    '\n',
    '\r',
    '\f',
    '\v',
    '\u00a0',
    '\u1680',
    '\u2000',
    '\u200a',
    '\u200b',
    '\u2028',
    '\u2029',
    '\u202f',
    '\u205f',
    '\u3000',
    '\ufeff',
    '\u0085',
    '\u202e',
    '\u2066',
    '\u200f',
    '\u061c',
    '"',
    '\\',
    '\u0000',
    '\u001f',
    '\u007f',
    'é',
    '\ud83d\ude00',
    '\ud83d',
    '\ude00',
    "'",
    '$',
  ];
  const text = fc.array(fc.constantFrom(...alphabet), { maxLength: 40 }).map((parts) => parts.join(''));
  it('needsCollapse answers what /\\s\\s|[\\t\\n\\r\\f\\v]/ does', () => {
    fc.assert(
      fc.property(
        fc.oneof(text, fc.string({ unit: 'binary', maxLength: 40 })),
        (t) => needsCollapse(t) === /\s\s|[\t\n\r\f\v]/.test(t),
      ),
      { numRuns: 20_000 },
    );
  });
  it('jsonString writes what JSON.stringify does, with U+2028, U+2029, C1 controls and bidi controls escaped too', () => {
    const raw = /[\u0080-\u009f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
    fc.assert(
      fc.property(fc.oneof(text, fc.string({ unit: 'binary', maxLength: 40 })), (t) => {
        const j = jsonString(t);
        return JSON.parse(j) === t && !raw.test(j) && (raw.test(t) || j === JSON.stringify(t));
      }),
      { numRuns: 20_000 },
    );
    expect(jsonString('a\u2028b\u2029c\u0085d\u009f')).toBe('"a\\u2028b\\u2029c\\u0085d\\u009f"');
    expect(jsonString('alice\u202eecila')).toBe('"alice\\u202eecila"');
  });
});

describe('SQL modes', () => {
  it('normalized replaces every kind of literal and drops comments', () => {
    const sql = `SELECT name FROM customers WHERE ssn = '123-45-6789' AND id = 42 AND score > 1.5e3 AND b = B'1011' AND x = X'ff'
      AND e = E'it\\'s' AND d = $$dollar secret$$ AND t = $q$tagged secret$q$ AND u = U&'d\\0061ta' AND n = N'nat' -- secret comment
      /* another 'secret' */ AND p = $1`;
    const n = normalizeSql(sql);
    for (const leak of [
      '123-45-6789',
      '42',
      '1.5e3',
      '1011',
      'ff',
      "it\\'s",
      'dollar',
      'tagged',
      'd\\0061ta',
      'nat',
      'secret',
    ]) {
      expect(n, leak).not.toContain(leak);
    }
    expect(n).toBe(
      'SELECT name FROM customers WHERE ssn = ? AND id = ? AND score > ? AND b = ? AND x = ? AND e = ? AND d = ? AND t = ? AND u = ? AND n = N? AND p = $1',
    );
  });

  it('reads texts with raw control bytes as the policy parser does: the statement is written, its literals and comments are not', () => {
    // libpg-query's scanSync fails on a raw control byte, and these texts (comment or dollar quote: past the fast
    // paths) were written as an unscannable placeholder, the statement lost.
    const cases: [string, string][] = [
      ['SELECT 1 /* c\u0001 secret */ FROM t', 'SELECT ? FROM t'],
      ['SELECT 1 -- c\u0002 secret\nFROM t', 'SELECT ? FROM t'],
      ["SELECT $$a\u0001secret$$, 'x' /* k */ FROM t", 'SELECT ?, ? FROM t'],
      ['SELECT "a\u0001b" FROM t /* k */', 'SELECT "a\u0001b" FROM t'],
      ["COPY (SELECT 'a\u0007secret' /*x*/) TO STDOUT", 'COPY (SELECT ? ) TO STDOUT'],
    ];
    for (const [sql, want] of cases) {
      expect(normalizeSql(sql), JSON.stringify(sql)).toBe(want);
      expect(auditSqlText(sql, 'normalized')).toEqual({ text: want, truncated: false });
    }
    // Cut to the normaliser's input bound, a long one is still written from its tokens.
    const long = `SELECT 1 /* \u0001 */, ${'x, '.repeat(MAX_NORMALIZED_SQL_INPUT)}y FROM t`;
    const cut = auditSqlText(long, 'normalized');
    expect(cut.truncated).toBe(true);
    expect(cut.text.startsWith('SELECT ? , x, x,')).toBe(true);
  });

  it('keeps non-ASCII identifiers intact (scanner offsets are bytes)', () => {
    expect(normalizeSql(`SELECT "ñame", 'héllo' FROM "tâble"`)).toBe('SELECT "ñame", $1 FROM "tâble"');
    expect(normalizeSql(`SELECT "ñame", 'héllo' /* c */ FROM "tâble"`)).toBe('SELECT "ñame", ? FROM "tâble"');
  });

  it("without comments, uses the server normalizer: constants become $n after the statement's own parameters", () => {
    expect(normalizeSql('SELECT abalance FROM pgbench_accounts WHERE aid = 12345;')).toBe(
      'SELECT abalance FROM pgbench_accounts WHERE aid = $1',
    );
    const n = normalizeSql("SELECT $1, 'ssn-123', 42 FROM t WHERE x = E'secret'");
    for (const leak of ['ssn-123', '42', 'secret']) expect(n).not.toContain(leak);
    expect(n).toBe('SELECT $1, $2, $3 FROM t WHERE x = $4');
  });

  it('writes nothing of a statement the scanner cannot read', () => {
    for (const bad of [
      "SELECT 'unterminated secret",
      'SELECT $$unterminated secret',
      "SELECT x'secret",
      'SELECT "unterminated secret',
    ]) {
      const n = normalizeSql(bad);
      expect(n).not.toContain('secret');
      expect(n).toMatch(/^\[unscannable statement, \d+ bytes\]$/);
    }
  });

  it("'none' leaves sql out, 'full' keeps it but still scrubs a JWT in it", async () => {
    const none = new Capture();
    const a = await open({ destination: none, sql: 'none' });
    a.events.statementDecided?.(fakeSession(), {
      seq: 1,
      mode: 'simple',
      sql: "SELECT 'x'",
      decision: allow(),
      micros: 1,
    });
    // Statement events are batched for at most BATCH_MS; flush() hands them over now.
    expect(none.events).toHaveLength(0);
    a.flush();
    expect(none.events[0]).not.toHaveProperty('sql');

    const full = new Capture();
    const b = await open({ destination: full, sql: 'full' });
    b.events.statementDecided?.(fakeSession(), {
      seq: 1,
      mode: 'simple',
      sql: `SELECT 'x', '${TOKEN}'`,
      decision: allow(),
      micros: 1,
    });
    await until(() => full.events.length === 1, 1_000);
    expect(full.events[0]?.['sql']).toBe("SELECT 'x', '[redacted-jwt]'");
  });

  it('truncates very long SQL and says so', async () => {
    const out = new Capture();
    const a = await open({ destination: out, sql: 'full' });
    a.events.statementDecided?.(fakeSession(), {
      seq: 1,
      mode: 'simple',
      sql: `SELECT ${'1,'.repeat(20_000)}1`,
      decision: allow(),
      micros: 1,
    });
    a.flush();
    expect((out.events[0]?.['sql'] as string | undefined)?.length).toBe(16 * 1024);
    expect(out.events[0]?.['sqlTruncated']).toBe(true);
  });
});

describe('long statements are cut before they are normalised', () => {
  it('normalises only a prefix, never writes a literal cut in two, and says it was cut', () => {
    const secret = 's3cr3t';
    // The cut (MAX_NORMALIZED_SQL_INPUT) falls inside the string constant.
    const head = `SELECT id FROM orders WHERE note = 'a' AND id IN (${'1,'.repeat((MAX_NORMALIZED_SQL_INPUT - 60) / 2)}1) AND x = '`;
    const sql = `${head}${secret.repeat(4000)}'`;
    const a = auditSqlText(sql, 'normalized');
    expect(a.truncated).toBe(true);
    expect(a.text).not.toContain(secret);
    expect(a.text.startsWith('SELECT id FROM orders WHERE note = $1 AND id IN (')).toBe(true);
    expect(a.text.length).toBeLessThanOrEqual(MAX_NORMALIZED_SQL_INPUT * 2);
    // A cut inside a comment or a dollar quote writes nothing of it either.
    for (const open of ['/* ', '$q$', '"']) {
      const b = auditSqlText(`SELECT 1, ${open}${secret.repeat(4000)}`, 'normalized');
      expect(b.truncated).toBe(true);
      expect(b.text).not.toContain(secret);
    }
  });

  it('a 1 MiB statement costs one normalisation of a few KiB', () => {
    const sql = `SELECT ${'('.repeat(512 * 1024)}1${')'.repeat(512 * 1024)}`;
    const a = auditSqlText(sql, 'normalized');
    expect(a.truncated).toBe(true);
    expect(a.text.length).toBeLessThanOrEqual(MAX_NORMALIZED_SQL_INPUT);
    const f = auditSqlText(sql, 'full');
    expect([f.text.length, f.truncated]).toEqual([16 * 1024, true]);
  });

  it('events written through pino escape U+2028, U+2029 and C1 controls too', async () => {
    const out = new Capture();
    const a = await open({ destination: out, sql: 'full' });
    const s = fakeSession();
    (s.identity as { agent: string }).agent = 'bot\u2028x\u0085y';
    a.events.loginSucceeded?.(s);
    a.events.statementDecided?.(s, { seq: 1, mode: 'simple', sql: "SELECT '\u2029'", decision: allow(), micros: 1 });
    a.flush();
    await until(() => out.events.length === 2, 1_000);
    expect(out.text).not.toMatch(/[\u0080-\u009f\u2028\u2029]/);
    expect(out.text).toContain('bot\\u2028x\\u0085y');
    expect(out.events[0]?.['agent']).toBe('bot\u2028x\u0085y');
    expect(out.events[1]?.['sql']).toBe("SELECT '\u2029'");
  });
});

describe('no credentials in the trail', () => {
  it('never writes a token, whatever field of the session or identity carries it', async () => {
    const out = new Capture();
    const audit = await open({ destination: out, sql: 'full' });
    // The token in a claim that IS copied (tenant), in fields that are not, and as a property of the session.
    const s = fakeSession({ token: TOKEN, password: 'hunter2' });
    (s.identity as { tenant: string }).tenant = TOKEN;
    audit.events.loginSucceeded?.(s);
    audit.events.loginFailed?.(
      s,
      'bad_signature',
      new ProxyError('ERR_TOKEN_INVALID', `token signature is invalid ${TOKEN}`),
    );
    audit.events.statementDecided?.(s, { seq: 1, mode: 'simple', sql: 'SELECT 1', decision: allow(), micros: 1 });
    audit.events.sessionEnded?.(s, 'client');
    expect(out.events).toHaveLength(4);
    expect(out.text).not.toContain(TOKEN);
    expect(out.text).not.toContain('hunter2');
    // The one whitelisted field that held it is kept as a field, with the value redacted.
    expect(out.events[0]?.['tenant']).toBe('[redacted-jwt]');
  });

  it('redacts password/token keys in caller-supplied info (pino redact)', async () => {
    const out = new Capture();
    const audit = await open({ destination: out });
    audit.policyReloaded({
      version: 2,
      reason: 'api',
      token: 'opaque-token-value',
      password: 'pw-value',
      upstream: { password: 'up-pw', token: 'tk' },
    });
    const line = out.text;
    for (const secret of ['opaque-token-value', 'pw-value', 'up-pw', '"tk"']) expect(line).not.toContain(secret);
    expect(out.events[0]).toMatchObject({
      token: '[redacted]',
      password: '[redacted]',
      upstream: { password: '[redacted]', token: '[redacted]' },
    });
  });
});

describe('failure policy', () => {
  class Failing extends Writable {
    override _write(_c: Buffer, _e: BufferEncoding, cb: (err?: Error | null) => void): void {
      const err = new Error('no space left on device') as NodeJS.ErrnoException;
      err.code = 'ENOSPC';
      cb(err);
    }
  }

  it("an erroring destination flips healthy; 'refuse' closes the gate and denies statements", async () => {
    const errors: string[] = [];
    const log = {
      error: (_f: object, m: string) => errors.push(m),
      warn: () => {},
      info: () => {},
    } as unknown as NonNullable<AuditOptions['log']>;
    const audit = await open({ destination: new Failing(), onFailure: 'refuse', log });
    expect(audit.healthy).toBe(true);
    expect(auditGate(audit)).toBe(true);
    audit.events.statementDecided?.(fakeSession(), {
      seq: 1,
      mode: 'simple',
      sql: 'SELECT 1',
      decision: allow(),
      micros: 1,
    });
    await until(() => !audit.healthy);
    expect(auditGate(audit)).toBe(false);
    expect(errors[0]).toMatch(/refusing new logins and statements/);

    const inner: StatementGate = { version: 4, role: () => undefined, decide: () => allow(), catalogSettled: () => {} };
    const gated = withAuditGate(inner, audit);
    expect(gated.version).toBe(4);
    const d = gated.decide('SELECT 1', 'simple', {} as SessionView);
    expect(d).toMatchObject({ allow: false, reason: 'audit_unavailable', sqlstate: '42501' });
  });

  it("'continue' keeps the gate open and reports on the operational log", async () => {
    const errors: string[] = [];
    const log = {
      error: (_f: object, m: string) => errors.push(m),
      warn: () => {},
      info: () => {},
    } as unknown as NonNullable<AuditOptions['log']>;
    const audit = await open({ destination: new Failing(), onFailure: 'continue', log });
    audit.events.loginSucceeded?.(fakeSession());
    await until(() => !audit.healthy);
    expect(auditGate(audit)).toBe(true);
    const inner: StatementGate = { version: 1, role: () => undefined, decide: () => allow(), catalogSettled: () => {} };
    expect((await withAuditGate(inner, audit).decide('SELECT 1', 'simple', {} as SessionView)).allow).toBe(true);
    expect(errors[0]).toMatch(/continuing without a complete audit trail/);
  });

  it.skipIf(!existsSync('/dev/full'))('a full disk (ENOSPC on write) makes a file destination unhealthy', async () => {
    const errors: object[] = [];
    const log = { error: (f: object) => errors.push(f), warn: () => {}, info: () => {} } as unknown as NonNullable<
      AuditOptions['log']
    >;
    const audit = await open({ destination: '/dev/full', log });
    audit.events.loginSucceeded?.(fakeSession());
    await until(() => !audit.healthy);
    expect(errors[0]).toMatchObject({ err: { code: 'ENOSPC' } });
  });

  it('a file destination that cannot be opened is unhealthy, and recovers (with an audit_gap marker) once it can', async () => {
    const dir = tmpDir();
    // The parent "directory" is a regular file: open (and mkdir) fail with ENOTDIR / EEXIST.
    const blocker = path.join(dir, 'logs');
    writeFileSync(blocker, 'not a directory');
    const file = path.join(blocker, 'audit.jsonl');
    const audit = await open({ destination: file, probeMs: 30 });
    await until(() => !audit.healthy);
    audit.events.loginSucceeded?.(fakeSession());
    rmSync(blocker);
    await until(() => audit.healthy);
    await audit.close();
    const lines = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l['event'])).toContain('audit_gap');
    expect(lines.map((l) => l['event'])).toContain('session_start');
  });
});

describe('file destination and rotation', () => {
  it('appends JSON lines and reopen() starts a new file after the old one was moved', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'nested', 'audit.jsonl');
    const audit = await open({ destination: file });
    audit.events.loginSucceeded?.(fakeSession());
    await until(() => existsSync(file) && readFileSync(file, 'utf8').includes('session_start'));
    renameSync(file, `${file}.1`);
    audit.reopen();
    audit.events.sessionEnded?.(fakeSession(), 'client');
    // The old session object has no session_start in this audit: use a fresh one to get a session_end.
    const s = fakeSession({ id: 'sess-2' });
    audit.events.loginSucceeded?.(s);
    await until(() => existsSync(file) && readFileSync(file, 'utf8').includes('sess-2'));
    await audit.close();
    expect(readFileSync(`${file}.1`, 'utf8')).toContain('session_start');
    expect(readFileSync(`${file}.1`, 'utf8')).not.toContain('sess-2');
    expect(readFileSync(file, 'utf8')).toContain('sess-2');
    expect(audit.healthy).toBe(true);
  });
});
