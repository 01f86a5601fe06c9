// A Session driven entirely in memory: client bytes in, client bytes out, and a scripted PostgreSQL backend behind an injected upstream connector.
//
// No database and no sockets: the client is one end of an in-memory duplex pair, and the upstream is a FakeBackend
// (test/helpers/in-memory.ts) logged in by pgwarden's own login code (loginUpstream). The backend knows only the SQL
// texts a test scripts; any other text fails with 42601 as PostgreSQL fails text it cannot parse, which is what
// PostgreSQL does with the sentinel pgwarden sends in place of a refused statement.
//
// Server analysis: not configured. The gate is createPolicyGate(store) with no ServerChecker, so decisions are
// pgwarden's own (evaluate() over the hand-built catalog in test/fixtures/catalog.ts). Allowed statements here would
// also be confirmed by PostgreSQL's analysis in real use; that path is covered against a real server by
// test/security/server-analysis.test.ts. Every refusal tested here is made before any analysis would run.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTokenVerifier, type TokenVerifier } from '../../../proxy/auth/jwt.ts';
import { mintToken } from '../../../proxy/auth/mint.ts';
import type { Config } from '../../../proxy/config/types.ts';
import { CancelRegistry } from '../../../proxy/session/cancel.ts';
import { createPolicyGate, type PolicyGate } from '../../../proxy/session/policy-gate.ts';
import { SENTINEL_SQL } from '../../../proxy/session/pipeline.ts';
import { Session, type EndReason } from '../../../proxy/session/session.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import { initParser } from '../../../policy/parser.ts';
import { PolicyStore } from '../../../policy/store.ts';
import { CATALOG } from '../../fixtures/catalog.ts';
import { Bytes, startupPacket, typed } from '../../helpers/bytes.ts';
import {
  FakeUpstream,
  MessageReader,
  dataRow,
  duplexPair,
  errorFields,
  errorResponse,
  rowDescription,
} from '../../helpers/in-memory.ts';
import { makeTempDir, signToken, testAuthConfig, writeHmacSecret } from '../../helpers/keys.ts';
import { bind, execute, parse, query, sync } from '../../helpers/raw-client.ts';
import { refusalReason } from '../../../policy/reasons.ts';

const POLICY = `roles:
  analyst:
    readOnly: true
    relations: [public.orders, public.customers]
    deniedColumns: { public.customers: [ssn] }
    statementTimeout: 5s
`;

const SELECT_ORDERS = 'SELECT id FROM orders';
const ORDERS = { columns: ['id'], rows: [['1'], ['2']], tag: 'SELECT 2' };

let tmp: ReturnType<typeof makeTempDir>;
let secret: Uint8Array;
let config: Config;
let store: PolicyStore;
let gate: PolicyGate;
let verifier: TokenVerifier;

beforeAll(async () => {
  await initParser();
  tmp = makeTempDir('pgwarden-inmem-');
  const s = writeHmacSecret(tmp.dir);
  secret = s.secret;
  const policyFile = path.join(tmp.dir, 'policy.yaml');
  writeFileSync(policyFile, POLICY);
  config = {
    baseDir: tmp.dir,
    listen: { host: '127.0.0.1', port: 0, tls: undefined },
    // Never dialled: the injected connector answers instead.
    upstream: {
      host: 'upstream.invalid',
      port: 5432,
      database: 'app',
      user: 'pgwarden',
      password: undefined,
      sslmode: 'disable',
      sslRootCert: undefined,
      connectTimeout: 5_000,
    },
    auth: testAuthConfig({ secretFile: s.path, clockSkew: 0, jwksTimeout: undefined }),
    policyFile,
    metrics: undefined,
    limits: {
      maxMessageSize: 1024 * 1024,
      handshakeTimeout: 5_000,
      expiryGrace: 0,
      maxClientConnections: 10,
      idleSessionTimeout: 0,
    },
    log: { level: 'silent' },
  };
  store = await PolicyStore.open({ file: policyFile, watch: false, loadCatalog: async () => CATALOG });
  gate = createPolicyGate(store);
  verifier = await createTokenVerifier(config.auth);
});

afterAll(async () => {
  await gate?.close();
  store?.close();
  tmp?.cleanup();
});

interface Harness {
  session: Session;
  client: Duplex;
  /** What the client received. */
  got: MessageReader;
  upstream: FakeUpstream;
  ended: Promise<EndReason>;
}

const open: Harness[] = [];
afterEach(() => {
  for (const h of open.splice(0)) {
    h.session.close('client');
    h.client.destroy();
  }
});

/** A Session on one end of an in-memory pair; the test writes to and reads from the other end. */
function start(address = '127.0.0.1', cancels = new CancelRegistry()): Harness {
  const [client, server] = duplexPair();
  // A Duplex has no address; the session reads it to apply allowCleartext: 'loopback'.
  Object.assign(server, { remoteAddress: address });
  const upstream = new FakeUpstream();
  upstream.onBackend = (b) => b.results.set(SELECT_ORDERS, ORDERS);
  let ended!: (r: EndReason) => void;
  const endedP = new Promise<EndReason>((r) => (ended = r));
  const session = new Session(server, {
    config,
    verifier,
    gate,
    cancels,
    log: pino({ level: 'silent' }),
    tlsContext: undefined,
    upstream,
    events: { sessionEnded: (_s, reason) => ended(reason) },
  });
  const h = { session, client, got: new MessageReader(client), upstream, ended: endedP };
  open.push(h);
  return h;
}

const STARTUP = startupPacket([
  ['user', 'alice'],
  ['database', 'app'],
]);
const token = (claims: Record<string, string> = {}, ttlMs = 5 * 60_000) =>
  mintToken(config.auth, { sub: 'alice', role: 'analyst', agent: 'agent-1', ...claims }, ttlMs);
const password = (t: string) => typed('p', new Bytes().cstr(t));
const AUTH_CLEARTEXT = typed('R', new Bytes().i32(3));
const ready = (status: 'I' | 'T' | 'E') => typed('Z', new Bytes().str(status));
const complete = (tag: string) => typed('C', new Bytes().cstr(tag));
const PARSE_COMPLETE = typed('1');
const BIND_COMPLETE = typed('2');
const TERMINATE = typed('X');

/** Logs in with a valid token and returns once the client has its ReadyForQuery; the login messages are checked. */
async function login(h: Harness): Promise<number> {
  h.client.write(STARTUP);
  h.client.write(password(await token()));
  await h.got.typeAfter('Z', 0);
  return h.got.messages.length;
}

function denial(sql: string, mode: 'simple' | 'parse') {
  const role = store.current.policy.roles.get('analyst');
  if (role === undefined) throw new Error('no analyst role');
  const d = evaluate(
    sql,
    mode,
    { role, preparedNames: new Set(), cursorNames: new Set() },
    CATALOG,
    store.current.policy.version,
  );
  if (d.allow) throw new Error(`expected ${sql} to be denied`);
  return d;
}

/** The message a refusal reaches the client with: pgwarden's own, ending with the hint and the reason (docs/errors.md). */
function sentMessage(d: ReturnType<typeof denial>): string {
  return `${d.message}${d.hint === undefined ? '' : `; hint: ${d.hint}`} (reason=${refusalReason(d)})`;
}

describe('in-memory session: startup and token verification', () => {
  it('logs in: asks for a password, logs in upstream with the stamped parameters, and answers with its own key', async () => {
    const h = start();
    h.client.write(STARTUP);
    await h.got.count(1);
    expect(h.got.messages[0]?.raw).toEqual(AUTH_CLEARTEXT);
    expect(h.upstream.backends).toHaveLength(0);
    h.client.write(password(await token()));
    await h.got.typeAfter('Z', 1);

    const b = h.upstream.backends[0];
    if (b === undefined) throw new Error('no upstream connection');
    // pgwarden's own credentials and the identity stamped by the session, never the client's user name.
    expect(Object.fromEntries(b.startup)).toEqual({
      client_encoding: 'UTF8',
      standard_conforming_strings: 'on',
      application_name: 'pgwarden:alice/agent-1',
      search_path: 'public',
      'pgwarden.sub': 'alice',
      'pgwarden.agent': 'agent-1',
      'pgwarden.role': 'analyst',
      'pgwarden.tenant': '',
      'pgwarden.jti': expect.any(String),
      'pgwarden.session_id': h.session.id,
      // The token's exp, for pgwarden.session.
      'pgwarden.expires_at': new Date((h.session.identity?.exp ?? 0) * 1000).toISOString(),
      statement_timeout: '5000',
      idle_in_transaction_session_timeout: expect.stringMatching(/^\d+$/),
      default_transaction_read_only: 'on',
      user: 'pgwarden',
      database: 'app',
    });
    expect(b.received).toEqual([]);

    const after = h.got.messages.slice(1);
    expect(after.map((m) => m.type)).toEqual(['R', 'S', 'S', 'S', 'K', 'Z']);
    expect(Buffer.concat(after.slice(0, 4).map((m) => m.raw))).toEqual(
      Buffer.concat([
        typed('R', new Bytes().i32(0)),
        ...b.parameters.map(([k, v]) => typed('S', new Bytes().cstr(k).cstr(v))),
      ]),
    );
    // The client gets the upstream backend's pid with pgwarden's own secret, never the upstream's (a cancel must come through pgwarden).
    const key = after[4]?.body;
    expect(key?.length).toBe(8);
    expect(key?.readInt32BE(0)).toBe(b.processId);
    expect(key?.subarray(4).equals(b.secretKey)).toBe(false);
    expect(after[5]?.raw).toEqual(ready('I'));
    expect(h.session.identity?.sub).toBe('alice');
  });

  const refused: [string, () => Promise<string>, string, string][] = [
    ['a token that is not a JWT', async () => 'not-a-token', '28P01', 'credential_invalid'],
    [
      'a token signed with another secret',
      async () =>
        await signToken(
          new Uint8Array(32).fill(7),
          {
            iss: 'pgwarden-test',
            aud: 'pgwarden',
            sub: 'alice',
            role: 'analyst',
            exp: Math.floor(Date.now() / 1000) + 60,
          },
          { alg: 'HS256' },
        ),
      '28P01',
      'credential_invalid',
    ],
    [
      'an expired token',
      async () =>
        await signToken(
          secret,
          {
            iss: 'pgwarden-test',
            aud: 'pgwarden',
            sub: 'alice',
            role: 'analyst',
            iat: Math.floor(Date.now() / 1000) - 120,
            exp: Math.floor(Date.now() / 1000) - 60,
          },
          { alg: 'HS256' },
        ),
      '28P01',
      'credential_expired',
    ],
    [
      'a token for a role the policy does not define',
      async () => await token({ role: 'nobody' }),
      '28000',
      'credential_rejected',
    ],
  ];
  it.each(refused)(
    'refuses %s with one FATAL ErrorResponse and ends, opening no upstream connection',
    async (_what, make, sqlstate, reason) => {
      const h = start();
      h.client.write(STARTUP);
      h.client.write(password(await make()));
      await h.got.endOfStream();
      expect(await h.ended).toBe('auth_failed');
      expect(h.got.messages.map((m) => m.type)).toEqual(['R', 'E']);
      expect(h.got.partial).toBe(0);
      const fields = errorFields(h.got.messages[1]?.body ?? Buffer.alloc(0));
      expect(fields.slice(0, 3)).toEqual([
        ['S', 'FATAL'],
        ['V', 'FATAL'],
        ['C', sqlstate],
      ]);
      expect(fields.map(([k]) => k)).toEqual(['S', 'V', 'C', 'M', 'D', 'H']);
      // The machine-readable reason is DETAIL's first line (docs/errors.md).
      expect(fields.find(([k]) => k === 'D')?.[1]).toBe(`reason=${reason}`);
      expect(h.upstream.backends).toHaveLength(0);
    },
  );

  it('refuses a cleartext token from a non-loopback address before asking for it (28000), opening nothing upstream', async () => {
    const h = start('203.0.113.9');
    h.client.write(STARTUP);
    await h.got.endOfStream();
    expect(h.got.messages).toHaveLength(1);
    expect(errorFields(h.got.messages[0]?.body ?? Buffer.alloc(0)).slice(0, 3)).toEqual([
      ['S', 'FATAL'],
      ['V', 'FATAL'],
      ['C', '28000'],
    ]);
    expect(h.upstream.backends).toHaveLength(0);
  });

  it('handles a query pipelined behind the password once the upstream is ready, exactly once', async () => {
    const h = start();
    h.client.write(Buffer.concat([STARTUP, password(await token()), query(SELECT_ORDERS)]));
    await h.got.until(() => h.got.messages.filter((m) => m.type === 'Z').length === 2, 'two ReadyForQuery');
    expect(h.upstream.backends[0]?.received.map((m) => m.raw)).toEqual([query(SELECT_ORDERS)]);
  });
});

describe('in-memory session: statements', () => {
  it("forwards an allowed query as sent and relays the backend's answer byte for byte", async () => {
    const h = start();
    const n = await login(h);
    h.client.write(query(SELECT_ORDERS));
    await h.got.typeAfter('Z', n);
    expect(h.upstream.backends[0]?.received.map((m) => m.raw)).toEqual([query(SELECT_ORDERS)]);
    expect(h.got.bytes(n)).toEqual(
      Buffer.concat([rowDescription(['id']), dataRow(['1']), dataRow(['2']), complete('SELECT 2'), ready('I')]),
    );
  });

  it('refuses a denied simple query: only the sentinel reaches upstream, the client gets 42501 then ReadyForQuery, and the session stays usable', async () => {
    const h = start();
    const n = await login(h);
    const sql = 'DELETE FROM orders';
    h.client.write(query(sql));
    await h.got.typeAfter('Z', n);
    const d = denial(sql, 'simple');
    expect(d.sqlstate).toBe('42501');
    expect(sentMessage(d)).toBe(
      'permission denied by pgwarden: DELETE writes to orders and role "analyst" is read-only; hint: read-only roles may run SELECT, VALUES, TABLE, SHOW, EXPLAIN, transaction control, cursors and COPY … TO STDOUT (reason=policy_denied)',
    );
    // PostgreSQL's own 42601 for the sentinel is replaced by pgwarden's refusal; nothing else is sent.
    expect(h.got.bytes(n)).toEqual(
      Buffer.concat([
        errorResponse('ERROR', '42501', sentMessage(d), `reason=${refusalReason(d)}\n${d.detail}`, d.hint),
        ready('I'),
      ]),
    );
    expect(h.upstream.backends[0]?.received.map((m) => m.raw)).toEqual([query(SENTINEL_SQL)]);

    const m = h.got.messages.length;
    h.client.write(query(SELECT_ORDERS));
    await h.got.typeAfter('Z', m);
    expect(h.got.bytes(m)).toEqual(
      Buffer.concat([rowDescription(['id']), dataRow(['1']), dataRow(['2']), complete('SELECT 2'), ready('I')]),
    );
    expect(h.upstream.backends[0]?.received.map((m) => m.raw)).toEqual([query(SENTINEL_SQL), query(SELECT_ORDERS)]);
    expect(h.session.isClosed).toBe(false);
  });

  it('refuses a query text of several statements whole when one is denied: none of them reaches upstream', async () => {
    const h = start();
    const n = await login(h);
    const sql = `${SELECT_ORDERS}; DELETE FROM orders`;
    h.client.write(query(sql));
    await h.got.typeAfter('Z', n);
    const d = denial(sql, 'simple');
    expect(h.upstream.backends[0]?.received.map((m) => m.raw)).toEqual([query(SENTINEL_SQL)]);
    expect(h.got.bytes(n)).toEqual(
      Buffer.concat([
        errorResponse('ERROR', '42501', sentMessage(d), `reason=${refusalReason(d)}\n${d.detail}`, d.hint),
        ready('I'),
      ]),
    );
  });

  it('a refusal inside a transaction block fails the upstream transaction, so a later COMMIT commits nothing', async () => {
    const h = start();
    const n = await login(h);
    const b = h.upstream.backends[0];
    if (b === undefined) throw new Error('no upstream connection');
    b.results.set('BEGIN', { columns: [], rows: [], tag: 'BEGIN' });
    h.client.write(query('BEGIN'));
    await h.got.typeAfter('Z', n);
    expect(h.got.bytes(n)).toEqual(Buffer.concat([complete('BEGIN'), ready('T')]));
    const m = h.got.messages.length;
    h.client.write(query('DELETE FROM orders'));
    await h.got.typeAfter('Z', m);
    const d = denial('DELETE FROM orders', 'simple');
    // The sentinel failed the transaction upstream, as the refused statement would have; the client is told so.
    expect(h.got.bytes(m)).toEqual(
      Buffer.concat([
        errorResponse('ERROR', '42501', sentMessage(d), `reason=${refusalReason(d)}\n${d.detail}`, d.hint),
        ready('E'),
      ]),
    );
    const k = h.got.messages.length;
    h.client.write(query('COMMIT'));
    await h.got.typeAfter('Z', k);
    expect(h.got.bytes(k)).toEqual(Buffer.concat([complete('ROLLBACK'), ready('I')]));
    expect(b.received.map((x) => x.raw)).toEqual([query('BEGIN'), query(SENTINEL_SQL), query('COMMIT')]);
  });

  it('a refused Parse in a pipeline: responses before it arrive first, then 42501, then nothing until Sync; the next batch runs', async () => {
    const h = start();
    const n = await login(h);
    const denied = 'SELECT ssn FROM customers';
    const batch = [
      parse('', SELECT_ORDERS),
      bind('', ''),
      execute(''),
      parse('', denied),
      bind('', ''),
      execute(''),
      sync(),
    ];
    h.client.write(Buffer.concat(batch));
    await h.got.typeAfter('Z', n);
    const d = denial(denied, 'parse');
    // Upstream sees the batch in order with the refused text replaced by the sentinel under the same (unnamed) name;
    // the Bind and Execute after it are discarded by the server up to Sync, as PostgreSQL does after an error.
    expect(h.upstream.backends[0]?.received.map((m) => m.raw)).toEqual([
      parse('', SELECT_ORDERS),
      bind('', ''),
      execute(''),
      parse('', SENTINEL_SQL),
      bind('', ''),
      execute(''),
      sync(),
    ]);
    expect(h.got.bytes(n)).toEqual(
      Buffer.concat([
        PARSE_COMPLETE,
        BIND_COMPLETE,
        dataRow(['1']),
        dataRow(['2']),
        complete('SELECT 2'),
        errorResponse('ERROR', d.sqlstate, sentMessage(d), `reason=${refusalReason(d)}\n${d.detail}`, d.hint),
        ready('I'),
      ]),
    );

    const m = h.got.messages.length;
    h.client.write(Buffer.concat([parse('', SELECT_ORDERS), bind('', ''), execute(''), sync()]));
    await h.got.typeAfter('Z', m);
    expect(h.got.bytes(m)).toEqual(
      Buffer.concat([PARSE_COMPLETE, BIND_COMPLETE, dataRow(['1']), dataRow(['2']), complete('SELECT 2'), ready('I')]),
    );
  });

  it('refuses Bind of a statement never prepared through pgwarden, and Execute of a portal it never bound, without forwarding either', async () => {
    const h = start();
    const n = await login(h);
    h.client.write(Buffer.concat([bind('', 'made_elsewhere'), execute(''), sync()]));
    await h.got.typeAfter('Z', n);
    // The Bind is replaced by the sentinel Parse, so the name is never looked up upstream; so is the Execute of a
    // portal pgwarden never saw bound. The server discards the second sentinel (after the first error, up to Sync),
    // so the client sees one error.
    expect(h.upstream.backends[0]?.received.map((m) => m.raw)).toEqual([
      parse('', SENTINEL_SQL),
      parse('', SENTINEL_SQL),
      sync(),
    ]);
    const types = h.got.messages.slice(n).map((m) => m.type);
    expect(types).toEqual(['E', 'Z']);
    expect(errorFields(h.got.messages[n]?.body ?? Buffer.alloc(0)).slice(0, 3)).toEqual([
      ['S', 'ERROR'],
      ['V', 'ERROR'],
      ['C', '42501'],
    ]);
  });
});

describe('in-memory session: cancel', () => {
  /** A CancelRequest for the key the client was given (BackendKeyData's pid and secret), secret bytes optionally changed. */
  function cancelRequest(key: Buffer, flip = false): Buffer {
    const secret = Buffer.from(key.subarray(4));
    if (flip) secret[0] = (secret[0] ?? 0) ^ 0xff;
    return new Bytes().i32(16).i32(80877102).raw(key.subarray(0, 4)).raw(secret).build();
  }

  it("a CancelRequest with the session's key reaches the upstream through the connector, with the backend's own key; a wrong secret does not", async () => {
    const cancels = new CancelRegistry();
    const h = start('127.0.0.1', cancels);
    const n = await login(h);
    const key = h.got.messages[n - 2]?.body;
    if (key === undefined || h.got.messages[n - 2]?.type !== 'K') throw new Error('no BackendKeyData');

    const wrong = start('127.0.0.1', cancels);
    wrong.client.write(cancelRequest(key, true));
    await wrong.got.endOfStream();
    expect(wrong.got.messages).toEqual([]);
    expect(h.upstream.cancels).toEqual([]);

    const right = start('127.0.0.1', cancels);
    right.client.write(cancelRequest(key));
    // PostgreSQL answers a CancelRequest with nothing but closing the connection.
    await right.got.endOfStream();
    expect(right.got.messages).toEqual([]);
    const b = h.upstream.backends[0];
    expect(h.upstream.cancels).toEqual([{ processId: b?.processId, secretKey: b?.secretKey }]);
    // The cancel connections never logged in, so they opened nothing upstream.
    expect([wrong.upstream.backends, right.upstream.backends]).toEqual([[], []]);
    expect(h.session.isClosed).toBe(false);
  });
});

describe('in-memory session: ending', () => {
  it('Terminate is passed upstream and ends the session; both streams end', async () => {
    const h = start();
    const n = await login(h);
    const b = h.upstream.backends[0];
    if (b === undefined) throw new Error('no upstream connection');
    h.client.write(TERMINATE);
    expect(await h.ended).toBe('client');
    await h.got.endOfStream();
    await b.from.endOfStream();
    expect(h.got.messages).toHaveLength(n);
    const sent = b.received.map((m) => m.raw);
    expect(sent[0]).toEqual(TERMINATE);
    // close() ends the upstream with a Terminate of its own; PostgreSQL stops reading at the first one.
    expect(sent.every((raw) => raw.equals(TERMINATE))).toBe(true);
  });

  it('the upstream closing mid-query: rows already sent reach the client, then FATAL 08006, and the session ends', async () => {
    const h = start();
    const n = await login(h);
    const b = h.upstream.backends[0];
    if (b === undefined) throw new Error('no upstream connection');
    b.results.set(SELECT_ORDERS, { ...ORDERS, dieAfterRows: 1 });
    h.client.write(query(SELECT_ORDERS));
    expect(await h.ended).toBe('upstream_lost');
    await h.got.endOfStream();
    const rest = h.got.messages.slice(n);
    expect(rest.map((m) => m.type)).toEqual(['T', 'D', 'E']);
    expect(Buffer.concat(rest.slice(0, 2).map((m) => m.raw))).toEqual(
      Buffer.concat([rowDescription(['id']), dataRow(['1'])]),
    );
    expect(errorFields(rest[2]?.body ?? Buffer.alloc(0))).toEqual([
      ['S', 'FATAL'],
      ['V', 'FATAL'],
      ['C', '08006'],
      [
        'M',
        'the connection to the upstream database was lost; hint: reconnect; if it keeps happening, contact the operator (reason=unavailable)',
      ],
      ['D', 'reason=unavailable'],
      ['H', 'reconnect; if it keeps happening, contact the operator'],
    ]);
    expect(h.got.partial).toBe(0);
  });

  it('the client going away mid-session closes the upstream connection', async () => {
    const h = start();
    await login(h);
    const b = h.upstream.backends[0];
    if (b === undefined) throw new Error('no upstream connection');
    h.client.end();
    expect(await h.ended).toBe('client');
    await b.from.endOfStream();
    expect(b.received.map((m) => m.raw)).toEqual([TERMINATE]);
  });
});
