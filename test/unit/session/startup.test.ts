// Startup parameter allow list, application_name composition and the stamped upstream parameters.
import { describe, expect, it } from 'vitest';
import {
  acceptStartupSettings,
  composeApplicationName,
  parseOptions,
  readClientStartup,
  stampParameters,
} from '../../../proxy/session/startup.ts';
import { makeRole } from '../../fixtures/catalog.ts';
import { ProxyError } from '../../../lib/errors.ts';

const params = (o: Record<string, string>) => new Map(Object.entries(o));

function refusal(fn: () => unknown): ProxyError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ProxyError) return e;
    throw e;
  }
  throw new Error('expected a refusal');
}

describe('client startup parameters', () => {
  it('forwards what drivers send and keeps the application_name aside', () => {
    const s = readClientStartup(
      params({
        user: 'a',
        database: 'app',
        client_encoding: 'UTF8',
        DateStyle: 'ISO, MDY',
        TimeZone: 'UTC',
        extra_float_digits: '3',
        application_name: 'psql',
      }),
      'app',
    );
    expect(s.forwarded).toEqual({ DateStyle: 'ISO, MDY', TimeZone: 'UTC', extra_float_digits: '3' });
    expect(s.applicationName).toBe('psql');
  });

  it('refuses replication with a FATAL, before login', () => {
    const e = refusal(() => readClientStartup(params({ user: 'a', replication: 'database' }), 'app'));
    expect([e.severity, e.sqlstate]).toEqual(['FATAL', '0A000']);
    expect(e.message).toContain('replication');
  });

  it('reads options as PostgreSQL splits them, keeping only -c / -- settings, ahead of the other parameters', () => {
    expect(parseOptions('-c statement_timeout=1s  -cwork_mem=4MB\t--lock-timeout=2s')).toEqual([
      ['statement_timeout', '1s'],
      ['work_mem', '4MB'],
      ['lock_timeout', '2s'],
    ]);
    expect(parseOptions('-c myapp.name=a\\ b\\\\c')).toEqual([['myapp.name', 'a b\\c']]);
    expect(parseOptions('  ')).toEqual([]);
    expect(parseOptions('-c search_path=')).toEqual([['search_path', '']]);
    // A no-break space is not C white space: it stays inside the word.
    expect(parseOptions('-c a=b\u00a0c')).toEqual([['a', 'b\u00a0c']]);
    for (const bad of ['-P', '-F', '-d 5', '-o x', 'statement_timeout=1', '-c', '-c novalue', '--novalue', '-c =x']) {
      const e = refusal(() => parseOptions(bad));
      expect([e.severity, e.sqlstate], bad).toEqual(['FATAL', '0A000']);
    }
    const s = readClientStartup(
      params({
        user: 'a',
        statement_timeout: '2s',
        options: '-c statement_timeout=1s -c application_name=from-options',
      }),
      'app',
    );
    // Plain parameters come after options' settings, so they win as in PostgreSQL; application_name goes aside.
    expect(s.settings).toEqual([
      ['statement_timeout', '1s'],
      ['statement_timeout', '2s'],
    ]);
    expect(s.applicationName).toBe('from-options');
    expect(
      readClientStartup(params({ user: 'a', application_name: 'param', options: '-c application_name=opt' }), 'app')
        .applicationName,
    ).toBe('param');
  });

  it('keeps every other parameter, in packet order, to be judged at login', () => {
    const s = readClientStartup(
      params({ user: 'a', statement_timeout: '1s', 'myapp.tenant': 't1', search_path: 'evil' }),
      'app',
    );
    expect(s.settings).toEqual([
      ['statement_timeout', '1s'],
      ['myapp.tenant', 't1'],
      ['search_path', 'evil'],
    ]);
  });
});

describe("startup settings follow the role's SET rules", () => {
  const timed = makeRole({
    name: 'timed',
    statementTimeout: 5000,
    idleInTransactionTimeout: 30_000,
    settings: new Set(['myapp.tenant']),
  });
  const open = makeRole({ name: 'open', readOnly: false });
  const judge = (role: ReturnType<typeof makeRole>, name: string, value: string) =>
    acceptStartupSettings([[name, value]], role);

  it.each([
    ['statement_timeout', '1s', { statement_timeout: '1s' }],
    ['statement_timeout', '5000', { statement_timeout: '5000' }],
    ['Statement_Timeout', '100ms', { statement_timeout: '100ms' }],
    ['idle_in_transaction_session_timeout', '10s', { idle_in_transaction_session_timeout: '10s' }],
    ['lock_timeout', '2s', { lock_timeout: '2s' }],
    ['myapp.tenant', 'acme', { 'myapp.tenant': 'acme' }],
    ['MyApp.Tenant', 'acme', { 'myapp.tenant': 'acme' }],
    ['application_name', 'x', { application_name: 'x' }],
  ] as const)('accepts %s=%s where SET would be allowed', (name, value, out) => {
    expect(judge(timed, name, value)).toEqual(out);
  });

  it.each([
    ['statement_timeout', '0'],
    ['statement_timeout', '10s'],
    ['statement_timeout', '400us'],
    ['statement_timeout', '010'],
    ['statement_timeout', 'abc'],
    ['idle_in_transaction_session_timeout', '0'],
    ['idle_in_transaction_session_timeout', '1h'],
    ['work_mem', '1GB'],
    ['myapp.other', 'x'],
    ['search_path', 'evil, public'],
    ['role', 'postgres'],
    ['session_authorization', 'postgres'],
    ['pgwarden.sub', 'mallory'],
    ['standard_conforming_strings', 'off'],
    ['default_transaction_read_only', 'off'],
    ['session_replication_role', 'replica'],
  ])('refuses %s=%s with the SET refusal: FATAL 42501, the parameter named in the detail', (name, value) => {
    const e = refusal(() => judge(timed, name, value));
    expect([e.severity, e.sqlstate]).toEqual(['FATAL', '42501']);
    expect(e.message).toBe('permission denied by pgwarden: SET changes a setting pgwarden does not allow');
    expect(e.detail).toContain(`startup parameter "${name}"`);
  });

  it('a role without statementTimeout may start with any statement_timeout, as it may SET any; read-write roles may set read-only mode', () => {
    expect(judge(open, 'statement_timeout', '0')).toEqual({ statement_timeout: '0' });
    expect(judge(open, 'default_transaction_read_only', 'on')).toEqual({ default_transaction_read_only: 'on' });
    expect(() => judge(open, 'idle_in_transaction_session_timeout', '0')).toThrow(ProxyError);
  });

  it('an accepted timeout replaces the stamped one (it is lower); a stamped identity never gives way', () => {
    const base = {
      sessionId: 's',
      sub: 'alice',
      agent: undefined,
      tenant: undefined,
      jti: undefined,
      roleName: 'timed',
      readOnly: true,
      statementTimeoutMs: 5000,
      idleInTransactionTimeoutMs: 30_000,
      dbRole: undefined,
      searchPath: ['public'],
      clientApplicationName: undefined,
      forwarded: {},
    };
    const out = stampParameters({
      ...base,
      settings: acceptStartupSettings(
        [
          ['statement_timeout', '1s'],
          ['idle_in_transaction_session_timeout', '2s'],
          ['myapp.tenant', 'acme'],
        ],
        timed,
      ),
    });
    expect(out).toMatchObject({
      statement_timeout: '1s',
      idle_in_transaction_session_timeout: '2s',
      'myapp.tenant': 'acme',
      'pgwarden.sub': 'alice',
      search_path: 'public',
    });
    // Even if a caller passed one, a stamped name other than the timeouts keeps pgwarden's value.
    const forged = stampParameters({
      ...base,
      settings: { 'pgwarden.sub': 'mallory', search_path: 'evil', application_name: 'x' },
    });
    expect(forged).toMatchObject({
      'pgwarden.sub': 'alice',
      search_path: 'public',
      application_name: 'pgwarden:alice',
    });
  });

  it('refuses client encodings whose multibyte characters can hide quotes or backslashes', () => {
    for (const enc of ['SJIS', 'BIG5', 'GBK', 'GB18030', 'LATIN1']) {
      expect(refusal(() => readClientStartup(params({ user: 'a', client_encoding: enc }), 'app')).message).toMatch(
        /client_encoding/,
      );
    }
    expect(() => readClientStartup(params({ user: 'a', client_encoding: 'SQL_ASCII' }), 'app')).not.toThrow();
    // PostgreSQL drops non-alphanumerics and case before looking an encoding up, so these are all UTF8 (as for SET).
    for (const enc of ['utf_8', 'UTF_8', 'Unicode', 'utf 8']) {
      expect(() => readClientStartup(params({ user: 'a', client_encoding: enc }), 'app')).not.toThrow();
    }
    expect(() => readClientStartup(params({ user: 'a', client_encoding: 'utf_16' }), 'app')).toThrow();
  });

  it('requires a user, refuses another database and reports _pq_ options as unsupported', () => {
    expect(refusal(() => readClientStartup(params({ database: 'app' }), 'app')).sqlstate).toBe('08P01');
    expect(refusal(() => readClientStartup(params({ user: 'a', database: 'other' }), 'app')).sqlstate).toBe('28000');
    expect(
      readClientStartup(params({ user: 'a', '_pq_.compression': 'on' }), 'app').unsupportedProtocolOptions,
    ).toEqual(['_pq_.compression']);
  });
});

describe('application_name', () => {
  it('is pgwarden:<sub>/<agent>, with the client name only when it all fits in 63 bytes', () => {
    expect(composeApplicationName('alice', 'bot', 'psql')).toBe('pgwarden:alice/bot psql');
    expect(composeApplicationName('alice', undefined, undefined)).toBe('pgwarden:alice');
    const long = composeApplicationName('a'.repeat(80), 'bot', 'psql');
    expect(Buffer.byteLength(long)).toBeLessThanOrEqual(63);
    expect(long.startsWith('pgwarden:aaaa')).toBe(true);
    // The client's part is cut to fit; the prefix never is (unless it alone is longer than 63 bytes).
    expect(composeApplicationName('alice', 'bot', 'x'.repeat(60))).toBe(`pgwarden:alice/bot ${'x'.repeat(44)}`);
    expect(composeApplicationName('a'.repeat(53), undefined, 'psql')).toBe(`pgwarden:${'a'.repeat(53)}`);
    expect(composeApplicationName('a'.repeat(52), undefined, 'psql')).toBe(`pgwarden:${'a'.repeat(52)} p`);
    // Claims are percent-encoded (unambiguous: the first space ends the identity); the client's part gets '?'.
    expect(composeApplicationName('ålice\n', 'bot', undefined)).toBe('pgwarden:%C3%A5lice%0A/bot');
    expect(composeApplicationName('al ice', undefined, 'x')).toBe('pgwarden:al%20ice x');
    expect(composeApplicationName('a/b', undefined, undefined)).not.toBe(composeApplicationName('a', 'b', undefined));
    expect(composeApplicationName('a%2Fb', undefined, undefined)).not.toBe(
      composeApplicationName('a/b', undefined, undefined),
    );
    expect(composeApplicationName('alice', 'bot', 'é\u0000\x1b[31m')).toBe('pgwarden:alice/bot ???[31m');
  });
});

describe('stamped upstream parameters', () => {
  const base = {
    sessionId: 'sid',
    sub: 'alice',
    agent: 'bot',
    tenant: 'acme',
    jti: 'j1',
    roleName: 'analyst',
    readOnly: true,
    statementTimeoutMs: 5000,
    dbRole: 'analyst_ro',
    searchPath: ['public', 'Sales'],
    clientApplicationName: undefined,
    forwarded: { DateStyle: 'ISO' },
  };

  it('pins lexing, identity and limits; client values cannot override them', () => {
    const p = stampParameters({ ...base, forwarded: { DateStyle: 'ISO', standard_conforming_strings: 'off' } });
    expect(p).toMatchObject({
      client_encoding: 'UTF8',
      standard_conforming_strings: 'on',
      'pgwarden.sub': 'alice',
      'pgwarden.agent': 'bot',
      'pgwarden.tenant': 'acme',
      'pgwarden.jti': 'j1',
      'pgwarden.role': 'analyst',
      'pgwarden.session_id': 'sid',
      statement_timeout: '5000',
      default_transaction_read_only: 'on',
      role: 'analyst_ro',
      search_path: 'public, "Sales"',
      DateStyle: 'ISO',
    });
  });

  it('refuses a claim with a NUL byte (it would end the startup string early)', () => {
    expect(refusal(() => stampParameters({ ...base, sub: 'alice\0role' })).sqlstate).toBe('28P01');
  });
});
