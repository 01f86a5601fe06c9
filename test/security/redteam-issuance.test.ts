// Red team of issue 16 item 1 (token narrowing and the RFC 8693 exchange): a token the endpoint issues never reaches more than the bound it was issued within, checked against the real Postgres through pg.
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import * as jose from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pgError, startTestProxy, withSuperClient, type TestProxy } from '../helpers/proxy.ts';
import { generateKeyFiles, makeTempDir, signToken, type TestKeyPair } from '../helpers/keys.ts';
import { SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';

const S = 'rt_iss';
const IDP = 'https://idp.rt-iss.test';
const IDP_AUDIENCE = 'pgwarden-exchange';
const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';

// The rule's bound limits rt_iss.people to id and name; the view people_v shows people.email as contact.
const D = 'rt_iss_ddl';
const POLICY = `roles:
  reader:
    readOnly: true
    relations: [${S}.*]
  builder:
    readOnly: false
    relations: [${D}.*]
    write: { statements: [insert, update, delete], relations: [${D}.*] }
    ddl: { kinds: [create_table, create_view, create_index, alter_table, drop, comment], schemas: [${D}] }
issuance:
  rules:
    - id: bounded
      subjects: [{ sub: alice }]
      roles: [reader]
      narrow: { columns: { ${S}.people: [id, name] } }
`;

const tmp = makeTempDir();
let idpKey: TestKeyPair;
let idpServer: http.Server;
let tp: TestProxy;

const nowSec = () => Math.floor(Date.now() / 1000);

async function idpToken(claims: jose.JWTPayload = {}): Promise<string> {
  return await signToken(
    idpKey.privateKey,
    { iss: IDP, aud: IDP_AUDIENCE, sub: 'alice', iat: nowSec(), exp: nowSec() + 300, ...claims },
    { alg: 'ES256', kid: idpKey.kid },
  );
}

async function exchange(params: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${tp.proxy.exchangePort}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: GRANT, subject_token_type: JWT, role: 'reader', ...params }).toString(),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function query(token: string, sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client(tp.pgConfig(token));
  c.on('error', () => {});
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  await withSuperClient(async (c) => {
    await c.query(`DROP SCHEMA IF EXISTS ${S} CASCADE`);
    await c.query(`CREATE SCHEMA ${S}`);
    await c.query(`CREATE TABLE ${S}.people (id int PRIMARY KEY, name text, email text)`);
    await c.query(`INSERT INTO ${S}.people VALUES (1, 'one', 'secret-1@example.com')`);
    await c.query(`CREATE TABLE ${S}.orders (id int PRIMARY KEY, total int)`);
    await c.query(`INSERT INTO ${S}.orders VALUES (1, 10)`);
    await c.query(`CREATE VIEW ${S}.people_v AS SELECT id, email AS contact FROM ${S}.people`);
    await c.query(`CREATE MATERIALIZED VIEW ${S}.people_m AS SELECT id, email AS contact FROM ${S}.people`);
    // An inheritance child and a two-level partition tree: their rows are the parent's, read under their own names.
    await c.query(`CREATE TABLE ${S}.people_kid () INHERITS (${S}.people)`);
    await c.query(`INSERT INTO ${S}.people_kid VALUES (2, 'two', 'secret-2@example.com')`);
    await c.query(`CREATE TABLE ${S}.pt (id int, secret text) PARTITION BY RANGE (id)`);
    await c.query(`CREATE TABLE ${S}.pt_sub PARTITION OF ${S}.pt FOR VALUES FROM (0) TO (100) PARTITION BY RANGE (id)`);
    await c.query(`CREATE TABLE ${S}.pt_leaf PARTITION OF ${S}.pt_sub FOR VALUES FROM (0) TO (50)`);
    await c.query(`INSERT INTO ${S}.pt VALUES (1, 'pt-secret')`);
    // Tables the upstream user owns, so PostgreSQL itself would let DDL on them through.
    await c.query(`DROP SCHEMA IF EXISTS ${D} CASCADE`);
    await c.query(`CREATE SCHEMA ${D} AUTHORIZATION ${SAMPLE_UPSTREAM_USER}`);
    for (const t of ['keep', 'scratch']) {
      await c.query(`CREATE TABLE ${D}.${t} (id int PRIMARY KEY, note text)`);
      await c.query(`INSERT INTO ${D}.${t} VALUES (1, 'canary')`);
      await c.query(`ALTER TABLE ${D}.${t} OWNER TO ${SAMPLE_UPSTREAM_USER}`);
    }
    await c.query(`CREATE VIEW ${D}.keep_v AS SELECT id FROM ${D}.keep`);
    await c.query(`ALTER VIEW ${D}.keep_v OWNER TO ${SAMPLE_UPSTREAM_USER}`);
    await c.query(`GRANT USAGE ON SCHEMA ${S} TO ${SAMPLE_UPSTREAM_USER}`);
    await c.query(`GRANT SELECT ON ALL TABLES IN SCHEMA ${S} TO ${SAMPLE_UPSTREAM_USER}`);
  });
  idpKey = await generateKeyFiles(tmp.dir, 'ES256', 'idp-rt');
  idpServer = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: [idpKey.publicJwk] }));
  });
  await new Promise<void>((r) => idpServer.listen(0, '127.0.0.1', () => r()));
  const addr = idpServer.address();
  const jwksUrl = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/jwks.json`;
  const signing = join(tmp.dir, 'signing.pem');
  const { privateKey } = await jose.generateKeyPair('ES256', { extractable: true });
  writeFileSync(signing, await jose.exportPKCS8(privateKey), { mode: 0o600 });
  tp = await startTestProxy({
    policy: POLICY,
    config: {
      exchange: {
        issuer: 'pgwarden-issued',
        audience: 'pgwarden',
        listen: { host: '127.0.0.1', port: 0, tls: undefined },
        signingKeyFile: signing,
        peerJwksUrls: [],
        idp: { issuer: IDP, audience: IDP_AUDIENCE, algorithms: ['ES256'], jwksUrl, publicKeyFile: undefined },
        maxBodyBytes: 16 * 1024,
        requestsPerMinute: 1000,
        requestTimeout: 5_000,
      },
    },
  });
});

afterAll(async () => {
  await tp?.close();
  await new Promise((r) => idpServer?.close(r));
  await withSuperClient(async (c) => {
    await c.query(`DROP SCHEMA IF EXISTS ${S} CASCADE`);
    await c.query(`DROP SCHEMA IF EXISTS ${D} CASCADE`);
  });
  tmp.cleanup();
});

describe('a child narrowing never names a view its column-limited bound reaches only through schema.*', () => {
  it('the bound itself cannot read the view that shows people.email', async () => {
    const res = await exchange({ subject_token: await idpToken() });
    expect(res.status).toBe(200);
    const token = res.body.access_token as string;
    expect((await query(token, `SELECT id, name FROM ONLY ${S}.people`)).rows).toEqual([{ id: 1, name: 'one' }]);
    expect((await pgError(() => query(token, `SELECT contact FROM ${S}.people_v`))).code).toBe('42501');
    expect((await pgError(() => query(token, `SELECT email FROM ${S}.people`))).code).toBe('42501');
  });

  // Before: the request named the view exactly, covered by the bound's rt_iss.* (the role's), and the issued token
  // read every email through it.
  it.each([
    ['relations naming the view', { relations: [`${S}.people_v`] }],
    ['relations naming the materialized view', { relations: [`${S}.people_m`] }],
    ['a columns key naming the view', { columns: { [`${S}.people_v`]: ['contact'] } }],
  ])('an IdP exchange whose request has %s is refused (invalid_scope)', async (_name, narrow) => {
    const res = await exchange({ subject_token: await idpToken(), narrow: JSON.stringify(narrow) });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_scope');
    expect(String(res.body.error_description)).toMatch(/view|not known/);
    expect(res.body.access_token).toBeUndefined();
  });

  it('a parent token whose narrowing limits columns cannot be exchanged for a child naming the view', async () => {
    const parent = await exchange({ subject_token: await idpToken() });
    const parentToken = parent.body.access_token as string;
    for (const narrow of [{ relations: [`${S}.people_v`] }, { columns: { [`${S}.people_v`]: ['contact'] } }]) {
      const child = await exchange({ subject_token: parentToken, narrow: JSON.stringify(narrow) });
      expect(child.status).toBe(400);
      expect(child.body.error).toBe('invalid_scope');
      expect(child.body.access_token).toBeUndefined();
    }
  });

  it('a relation pgwarden does not know yet is refused too (it could be made a view later); a table is issued', async () => {
    const unknown = await exchange({
      subject_token: await idpToken(),
      narrow: JSON.stringify({ relations: [`${S}.not_yet`] }),
    });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toBe('invalid_scope');
    const table = await exchange({
      subject_token: await idpToken(),
      narrow: JSON.stringify({ relations: [`${S}.orders`, `${S}.people`] }),
    });
    expect(table.status).toBe(200);
    const token = table.body.access_token as string;
    // The child keeps the bound's column list and reads the tables it names.
    expect(jose.decodeJwt(token).pgwarden_narrow).toMatchObject({ columns: { [`${S}.people`]: ['id', 'name'] } });
    expect((await query(token, `SELECT total FROM ${S}.orders`)).rows).toEqual([{ total: 10 }]);
    expect((await pgError(() => query(token, `SELECT email FROM ${S}.people`))).code).toBe('42501');
  });
});

describe('revoking a token or an agent revokes what was exchanged from it', () => {
  const revoke = async (yaml: string) => {
    writeFileSync(tp.config.revocation?.file ?? '', yaml);
    await tp.proxy.reload();
  };

  async function actorToken(sub: string): Promise<string> {
    return await signToken(
      idpKey.privateKey,
      { iss: IDP, aud: IDP_AUDIENCE, sub, iat: nowSec(), exp: nowSec() + 300 },
      { alg: 'ES256', kid: idpKey.kid },
    );
  }

  // Before: a leaked parent exchanged for a child (and a grandchild) stayed usable through them after its jti was
  // revoked: the child carries its own jti only.
  it('a revoked parent jti refuses its child and grandchild at login, ends their live sessions, and stops exchanges', async () => {
    const parent = await exchange({ subject_token: await idpToken() });
    const parentJti = jose.decodeJwt(parent.body.access_token as string).jti as string;
    const child = await exchange({ subject_token: parent.body.access_token as string });
    expect(child.status).toBe(200);
    const childToken = child.body.access_token as string;
    const grandchild = await exchange({ subject_token: childToken });
    expect(grandchild.status).toBe(200);
    const grandchildToken = grandchild.body.access_token as string;
    const live = new pg.Client(tp.pgConfig(childToken));
    const ended = new Promise<Error>((resolve) => live.on('error', resolve));
    await live.connect();
    try {
      expect((await live.query(`SELECT id FROM ONLY ${S}.people`)).rowCount).toBe(1);
      await revoke(`revoked:\n  - jti: ${parentJti}\n    reason: leaked parent\n`);
      // Hang guard: a session the revocation does not end would leave this waiting.
      const err = (await Promise.race([ended, new Promise((r) => setTimeout(() => r(undefined), 10_000))])) as
        | (Error & { code?: string })
        | undefined;
      expect(err?.code).toBe('57P01');
      for (const t of [childToken, grandchildToken]) {
        const refused = await pgError(() => query(t, 'SELECT 1'));
        expect(refused.code).toBe('28000');
        expect(refused.message).toContain('leaked parent');
      }
      const again = await exchange({ subject_token: childToken });
      expect([again.status, again.body.error]).toEqual([400, 'invalid_grant']);
    } finally {
      await live.end().catch(() => {});
      await revoke('revoked: []\n');
    }
  });

  it('a revoked IdP token jti refuses the pgwarden tokens obtained with it, and its further exchanges', async () => {
    const idp = await idpToken({ jti: 'idp-jti-leaked' });
    const res = await exchange({ subject_token: idp });
    expect(res.status).toBe(200);
    const token = res.body.access_token as string;
    expect((await query(token, 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    try {
      await revoke('revoked:\n  - jti: idp-jti-leaked\n    reason: leaked idp token\n');
      const refused = await pgError(() => query(token, 'SELECT 1'));
      expect(refused.code).toBe('28000');
      expect(refused.message).toContain('leaked idp token');
      const again = await exchange({ subject_token: idp });
      expect([again.status, again.body.error]).toEqual([400, 'invalid_grant']);
      expect(again.body.access_token).toBeUndefined();
    } finally {
      await revoke('revoked: []\n');
    }
    // An IdP jti pgwarden could not carry is refused rather than dropped.
    const odd = await exchange({ subject_token: await idpToken({ jti: 'x'.repeat(2000) }) });
    expect([odd.status, odd.body.error]).toEqual([400, 'invalid_grant']);
  });

  it('a revoked agent refuses a token another actor obtained from that agent’s token', async () => {
    const parent = await exchange({
      subject_token: await idpToken(),
      actor_token: await actorToken('bot-x'),
      actor_token_type: JWT,
    });
    expect(jose.decodeJwt(parent.body.access_token as string)).toMatchObject({ agent: 'bot-x' });
    const child = await exchange({
      subject_token: parent.body.access_token as string,
      actor_token: await actorToken('bot-y'),
      actor_token_type: JWT,
    });
    const childToken = child.body.access_token as string;
    expect(jose.decodeJwt(childToken)).toMatchObject({ agent: 'bot-y', act: { sub: 'bot-y', act: { sub: 'bot-x' } } });
    expect((await query(childToken, 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    try {
      await revoke('revoked:\n  - agent: bot-x\n    reason: runaway bot-x\n');
      const refused = await pgError(() => query(childToken, 'SELECT 1'));
      expect(refused.code).toBe('28000');
      expect(refused.message).toContain('runaway bot-x');
    } finally {
      await revoke('revoked: []\n');
    }
  });
});

// Before: a column list applied to the relation it named only, so the rows of an inheritance child or a partition,
// read under the child's own name, showed every column (docs called it a limit of column lists).
describe('a column list limits the inheritance children and partitions of the relation it names', () => {
  async function narrowed(): Promise<string> {
    return await tp.sign({
      iss: 'pgwarden-test',
      aud: 'pgwarden',
      sub: 'rt-iss',
      role: 'reader',
      iat: nowSec(),
      exp: nowSec() + 300,
      pgwarden_narrow: { columns: { [`${S}.people`]: ['id', 'name'], [`${S}.pt`]: ['id'] } },
    });
  }

  it.each([
    `SELECT email FROM ${S}.people_kid`,
    `SELECT * FROM ${S}.people_kid`,
    `SELECT k FROM ${S}.people_kid k`,
    `SELECT id FROM ${S}.people_kid WHERE email LIKE 'secret%'`,
    `SELECT id FROM ${S}.people WHERE EXISTS (SELECT 1 FROM ${S}.people_kid k WHERE k.email LIKE 's%')`,
    `COPY ${S}.people_kid TO STDOUT`,
    `SELECT secret FROM ${S}.pt_leaf`,
    `SELECT secret FROM ${S}.pt_sub`,
  ])('%s is refused (42501)', async (sql) => {
    const token = await narrowed();
    const err = await pgError(() => query(token, sql));
    expect(err.code).toBe('42501');
    expect(err.message).toMatch(/column|whole-row|\*/);
  });

  it('the listed columns of a child or partition are read, and pgwarden.scope lists only them', async () => {
    const token = await narrowed();
    expect((await query(token, `SELECT id, name FROM ${S}.people_kid`)).rows).toEqual([{ id: 2, name: 'two' }]);
    expect((await query(token, `SELECT id FROM ${S}.pt_leaf`)).rows).toEqual([{ id: 1 }]);
    const listed = await query(
      token,
      `SELECT table_name, column_name FROM pgwarden.scope WHERE table_name IN ('people_kid', 'pt_leaf') ORDER BY 1, 2`,
    );
    expect(listed.rows).toEqual([
      { table_name: 'people_kid', column_name: 'id' },
      { table_name: 'people_kid', column_name: 'name' },
      { table_name: 'pt_leaf', column_name: 'id' },
    ]);
  });
});

// Before: a narrowed token kept the role's ddl on its ddl.schemas "whatever relations says", so a token narrowed to
// one scratch table could drop, rename or alter every other table there.
describe('DDL of a narrowed token changes only relations its narrowing lets it write', () => {
  async function builder(narrow: unknown): Promise<pg.Client> {
    const token = await tp.sign({
      iss: 'pgwarden-test',
      aud: 'pgwarden',
      sub: 'rt-iss-ddl',
      role: 'builder',
      iat: nowSec(),
      exp: nowSec() + 300,
      pgwarden_narrow: narrow,
    });
    const c = new pg.Client(tp.pgConfig(token));
    c.on('error', () => {});
    await c.connect();
    return c;
  }
  const keep = () =>
    withSuperClient(async (c) => ({
      rows: (await c.query(`SELECT id, note FROM ${D}.keep`)).rows,
      columns: (
        await c.query(
          `SELECT array_agg(attname::text ORDER BY attnum) AS a FROM pg_attribute WHERE attrelid = '${D}.keep'::regclass AND attnum > 0 AND NOT attisdropped`,
        )
      ).rows[0].a,
      indexes: Number((await c.query(`SELECT count(*) FROM pg_indexes WHERE tablename = 'keep'`)).rows[0].count),
      view: (await c.query(`SELECT pg_get_viewdef('${D}.keep_v'::regclass) AS v`)).rows[0].v,
      comment: (await c.query(`SELECT obj_description('${D}.keep'::regclass, 'pg_class') AS d`)).rows[0].d,
    }));

  it.each([
    `DROP TABLE ${D}.keep`,
    `ALTER TABLE ${D}.keep ADD COLUMN extra int`,
    `ALTER TABLE ${D}.keep DROP COLUMN note`,
    `ALTER TABLE ${D}.keep RENAME TO gone`,
    `ALTER TABLE ${D}.keep RENAME COLUMN note TO n2`,
    `CREATE INDEX ON ${D}.keep (note)`,
    `COMMENT ON TABLE ${D}.keep IS 'x'`,
    `COMMENT ON COLUMN ${D}.keep.note IS 'x'`,
    `DROP TABLE ${D}.scratch, ${D}.keep`,
    `CREATE OR REPLACE VIEW ${D}.keep_v AS SELECT id FROM ${D}.scratch`,
  ])('a token narrowed to scratch is refused %s (42501), and keep is untouched', async (sql) => {
    const before = await keep();
    const c = await builder({ relations: [`${D}.scratch`] });
    try {
      const err = await pgError(() => c.query(sql));
      expect(err.code).toBe('42501');
      expect(err.message).toContain('narrowing');
    } finally {
      await c.end();
    }
    expect(await keep()).toEqual(before);
    expect(before.rows).toEqual([{ id: 1, note: 'canary' }]);
  });

  it('the narrowed relation itself may still be changed, new tables made, and an unnarrowed token is as before', async () => {
    const c = await builder({ relations: [`${D}.scratch`] });
    try {
      await c.query(`ALTER TABLE ${D}.scratch ADD COLUMN extra int`);
      await c.query(`CREATE INDEX scratch_note ON ${D}.scratch (note)`);
      await c.query(`COMMENT ON TABLE ${D}.scratch IS 'scratch'`);
      await c.query(`CREATE TABLE ${D}.fresh (id int)`);
    } finally {
      await c.end();
    }
    const wide = await builder({ maxRows: 10 });
    try {
      await wide.query(`COMMENT ON TABLE ${D}.keep IS 'kept'`);
      await wide.query(`DROP TABLE ${D}.fresh`);
    } finally {
      await wide.end();
    }
    expect((await keep()).comment).toBe('kept');
  });
});

// Found and left open (each a precise description of what is still possible).
describe('left open', () => {
  it.todo(
    'catalog: scoped — the filters hide the columns outside a column list of the relation the narrowing names, but not of its inheritance children and partitions: pg_attribute and information_schema.columns still list the child’s other column names (names only; reading them is refused by narrowedColumns)',
  );
  it.todo(
    'exchange — a relation a child token names exactly under a column-limited bound is checked to be no view when the token is issued; a table dropped and re-created as a view of the same name during the token’s life is then read through that view by its exact name',
  );
});
