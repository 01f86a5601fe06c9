// The RFC 8693 token-exchange endpoint end to end: IdP JWTs (JWKS on loopback) and parent tokens exchanged for narrowed pgwarden tokens, every RFC error, policy refusals, a second replica verifying through the JWKS, and no token in the trail.
import { execFile, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import type http from 'node:http';
import { join } from 'node:path';
import * as jose from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_POLICY, pgError, startTestProxy, type TestProxy } from '../helpers/proxy.ts';
import { serveJwks, writeSigningKey } from '../helpers/exchange.ts';
import { generateKeyFiles, makeTempDir, signToken, type TestKeyPair } from '../helpers/keys.ts';
import type { ExchangeConfig } from '../../proxy/config/types.ts';
import { tokenExchange } from '../../proxy/cli/exchange.ts';

const IDP = 'https://idp.test';
const IDP_AUDIENCE = 'pgwarden-exchange';
const ISSUER = 'pgwarden-issued';
const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';

const POLICY = `${DEFAULT_POLICY}issuance:
  rules:
    - id: analysts
      subjects: [{ issuer: "${IDP}", claims: { groups: analysts } }]
      roles: [analyst]
      maxLifetime: 10m
    - id: writers
      subjects: [{ sub: alice }]
      roles: [writer]
      approval: required
    - id: report-bot
      subjects: [{ sub: alice }]
      agents: [report-bot]
      roles: [capped]
      singleUse: required
`;

const tmp = makeTempDir();
let idpKey: TestKeyPair;
let otherKey: TestKeyPair;
let idpServer: http.Server;
let idpJwksUrl = '';
let a: TestProxy;
let b: TestProxy;
const signingA = join(tmp.dir, 'signing-a.pem');
const issued: string[] = [];
const presented: string[] = [];

const nowSec = () => Math.floor(Date.now() / 1000);

async function idpToken(claims: jose.JWTPayload = {}, key: TestKeyPair = idpKey): Promise<string> {
  const t = await signToken(
    key.privateKey,
    { iss: IDP, aud: IDP_AUDIENCE, sub: 'alice', groups: ['analysts'], iat: nowSec(), exp: nowSec() + 300, ...claims },
    { alg: 'ES256', kid: key.kid },
  );
  presented.push(t);
  return t;
}

async function post(
  port: number,
  params: Record<string, string | string[]> | string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  let body: string;
  if (typeof params === 'string') body = params;
  else {
    const form = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) for (const x of Array.isArray(v) ? v : [v]) form.append(k, x);
    body = form.toString();
  }
  const res = await fetch(`http://127.0.0.1:${port}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body,
  });
  const text = await res.text();
  const json = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
  if (typeof json.access_token === 'string') issued.push(json.access_token);
  return { status: res.status, body: json, headers: res.headers };
}

async function exchange(params: Record<string, string | string[]>, port = a.proxy.exchangePort ?? 0) {
  return await post(port, { grant_type: GRANT, subject_token_type: JWT, ...params });
}

async function query(tp: TestProxy, token: string, sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client(tp.pgConfig(token));
  c.on('error', () => {});
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

function exchangeConfig(extra: Partial<ExchangeConfig>): ExchangeConfig {
  return {
    issuer: ISSUER,
    audience: 'pgwarden',
    listen: { host: '127.0.0.1', port: 0, tls: undefined },
    signingKeyFile: undefined,
    peerJwksUrls: [],
    idp: {
      issuer: IDP,
      audience: IDP_AUDIENCE,
      approverAudience: 'pgwarden-approvals',
      algorithms: ['ES256'],
      jwksUrl: idpJwksUrl,
      publicKeyFile: undefined,
    },
    maxBodyBytes: 16 * 1024,
    requestsPerMinute: 1000,
    requestTimeout: 5_000,
    ...extra,
  };
}

beforeAll(async () => {
  idpKey = await generateKeyFiles(tmp.dir, 'ES256', 'idp-1');
  otherKey = await generateKeyFiles(tmp.dir, 'ES256', 'idp-1');
  ({ server: idpServer, url: idpJwksUrl } = await serveJwks(() => [idpKey.publicJwk]));
  await writeSigningKey(signingA);
  a = await startTestProxy({
    policy: POLICY,
    config: { exchange: exchangeConfig({ signingKeyFile: signingA }) },
  });
  // Replica B issues nothing: it trusts the tokens A issued through A's published JWKS.
  b = await startTestProxy({
    policy: POLICY,
    // A new kid is fetched at once (the default cooldown waits 30 s between fetches an unknown kid triggers).
    auth: { jwksCooldown: 0 },
    config: {
      exchange: exchangeConfig({
        listen: undefined,
        idp: undefined,
        peerJwksUrls: [`http://127.0.0.1:${a.proxy.exchangePort}/.well-known/jwks.json`],
      }),
    },
  });
});

afterAll(async () => {
  await b?.close();
  await a?.close();
  await new Promise((r) => idpServer?.close(r));
  tmp.cleanup();
});

describe('IdP subject token → narrowed pgwarden token', () => {
  it('issues a token narrowed to one relation that logs in and reads it', async () => {
    const res = await exchange({
      subject_token: await idpToken(),
      role: 'analyst',
      narrow: '{"relations":["public.orders"]}',
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.body).toMatchObject({ issued_token_type: JWT, token_type: 'N_A', scope: 'role:analyst' });
    expect(res.body.expires_in).toBe(300);
    const token = res.body.access_token as string;
    const claims = jose.decodeJwt(token);
    expect(claims).toMatchObject({
      iss: ISSUER,
      aud: 'pgwarden',
      sub: 'alice',
      role: 'analyst',
      pgwarden_narrow: { relations: ['public.orders'] },
    });
    expect(typeof claims.jti).toBe('string');
    expect(claims.act).toBeUndefined();
    // Signed by A's key, whose thumbprint is the kid A publishes.
    const header = jose.decodeProtectedHeader(token);
    const jwks = (await (
      await fetch(`http://127.0.0.1:${a.proxy.exchangePort}/.well-known/jwks.json`)
    ).json()) as jose.JSONWebKeySet;
    expect(jwks.keys.map((k) => k.kid)).toEqual([header.kid]);
    expect(jwks.keys[0]).not.toHaveProperty('d');
    expect(await jose.calculateJwkThumbprint(jwks.keys[0] as jose.JWK)).toBe(header.kid);

    const rows = await query(a, token, 'SELECT count(*)::int AS n FROM public.orders');
    expect(rows.rows[0].n).toBeGreaterThan(0);
    const who = await query(a, token, "SELECT current_setting('pgwarden.sub') AS s");
    expect(who.rows[0].s).toBe('alice');
  });

  // Enforcement of pgwarden_narrow on each statement is policy/narrow.ts's: the issued claim is exactly what it reads.
  it('the narrowed token is refused on another relation of its role (42501), and the canary is untouched', async () => {
    const res = await exchange({
      subject_token: await idpToken(),
      role: 'analyst',
      narrow: '{"relations":["public.orders"]}',
    });
    const err = await pgError(() => query(a, res.body.access_token as string, 'SELECT id FROM public.customers'));
    expect(err.code).toBe('42501');
    // The same subject's unnarrowed token reads it: the refusal is the narrowing's.
    const wide = await exchange({ subject_token: await idpToken(), role: 'analyst' });
    expect(
      (await query(a, wide.body.access_token as string, 'SELECT count(*)::int AS n FROM public.customers')).rows[0].n,
    ).toBeGreaterThan(0);
    // Columns: only those listed may be used.
    const cols = await exchange({
      subject_token: await idpToken(),
      role: 'analyst',
      narrow: '{"columns":{"public.customers":["id"]}}',
    });
    const token = cols.body.access_token as string;
    expect((await query(a, token, 'SELECT id FROM public.customers')).rowCount).toBeGreaterThan(0);
    expect((await pgError(() => query(a, token, 'SELECT name FROM public.customers'))).code).toBe('42501');
  });

  it('a token issued by replica A logs in on replica B through A’s JWKS', async () => {
    const res = await exchange({ subject_token: await idpToken({ sub: 'bob' }), role: 'analyst' });
    expect(res.status).toBe(200);
    const who = await query(b, res.body.access_token as string, "SELECT current_setting('pgwarden.sub') AS s");
    expect(who.rows[0].s).toBe('bob');
    // A token signed by a key A never published is refused by B (and by A).
    const forged = await signToken(
      otherKey.privateKey,
      { ...jose.decodeJwt(res.body.access_token as string) },
      { alg: 'ES256', kid: jose.decodeProtectedHeader(res.body.access_token as string).kid as string },
    );
    expect((await pgError(() => query(b, forged, 'SELECT 1'))).code).toBe('28P01');
    expect((await pgError(() => query(a, forged, 'SELECT 1'))).code).toBe('28P01');
  });
});

describe('parent token → narrower child', () => {
  it('narrows further, keeps the parent’s narrowing and caps the lifetime at the parent’s remaining life', async () => {
    const parent = await exchange({
      subject_token: await idpToken(),
      role: 'analyst',
      narrow: '{"relations":["public.orders","public.customers"]}',
      ttl: '120',
    });
    expect(parent.status).toBe(200);
    const parentToken = parent.body.access_token as string;
    const parentClaims = jose.decodeJwt(parentToken);
    const child = await exchange({
      subject_token: parentToken,
      role: 'analyst',
      narrow: '{"relations":["public.orders"],"maxRows":5}',
      ttl: '3600',
    });
    expect(child.status).toBe(200);
    expect(child.body.expires_in).toBeLessThanOrEqual(120);
    const claims = jose.decodeJwt(child.body.access_token as string);
    expect(claims.exp).toBeLessThanOrEqual(parentClaims.exp as number);
    expect(claims.sub).toBe('alice');
    expect(claims.pgwarden_narrow).toEqual({ relations: ['public.orders'], maxRows: 5 });
    // Leaving a key out keeps the parent's: the grandchild is still narrowed to orders.
    const grandchild = await exchange({ subject_token: child.body.access_token as string, role: 'analyst' });
    expect(jose.decodeJwt(grandchild.body.access_token as string).pgwarden_narrow).toEqual({
      relations: ['public.orders'],
      maxRows: 5,
    });
    const rows = await query(a, child.body.access_token as string, 'SELECT count(*)::int AS n FROM public.orders');
    expect(rows.rows[0].n).toBeGreaterThan(0);
  });

  it('refuses to widen: another relation, more rows, another role', async () => {
    const parent = await exchange({
      subject_token: await idpToken(),
      role: 'analyst',
      narrow: '{"relations":["public.orders"],"maxRows":10}',
    });
    const token = parent.body.access_token as string;
    const wider = await exchange({
      subject_token: token,
      role: 'analyst',
      narrow: '{"relations":["public.customers"]}',
    });
    expect(wider.status).toBe(400);
    expect(wider.body.error).toBe('invalid_scope');
    const rows = await exchange({ subject_token: token, role: 'analyst', narrow: '{"maxRows":11}' });
    expect(rows.body.error).toBe('invalid_scope');
    const role = await exchange({ subject_token: token, role: 'capped' });
    expect(role.body.error).toBe('invalid_scope');
  });

  it('an actor token adds the agent to the act chain', async () => {
    const actor = await idpToken({ sub: 'report-bot', groups: [] });
    const res = await exchange({
      subject_token: await idpToken(),
      role: 'capped',
      actor_token: actor,
      actor_token_type: JWT,
    });
    expect(res.status).toBe(200);
    const claims = jose.decodeJwt(res.body.access_token as string);
    expect(claims).toMatchObject({ sub: 'alice', role: 'capped', agent: 'report-bot', act: { sub: 'report-bot' } });
    // The rule requires single use: the token logs in once.
    expect(claims.pgwarden_single_use).toBe(true);
    await query(a, res.body.access_token as string, 'SELECT 1');
    expect((await pgError(() => query(a, res.body.access_token as string, 'SELECT 1'))).code).toBe('28000');
    const start = a
      .auditLines()
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((e) => e.event === 'session_start' && e.jti === claims.jti);
    expect(start).toMatchObject({ act: ['report-bot'], agent: 'report-bot', role: 'capped' });
    // A single-use token cannot be exchanged either (it would outlive its one use).
    const again = await exchange({ subject_token: res.body.access_token as string, role: 'capped' });
    expect(again.body.error).toBe('invalid_grant');
  });
});

describe('errors (RFC 6749 §5.2, RFC 8693 §2.2.2)', () => {
  const cases: [string, () => Promise<Record<string, string | string[]> | string>, number, string][] = [
    [
      'no grant_type',
      async () => ({ subject_token: await idpToken(), subject_token_type: JWT, role: 'analyst' }),
      400,
      'invalid_request',
    ],
    [
      'another grant_type',
      async () => ({ grant_type: 'client_credentials', role: 'analyst' }),
      400,
      'unsupported_grant_type',
    ],
    [
      'no subject_token',
      async () => ({ grant_type: GRANT, subject_token_type: JWT, role: 'analyst' }),
      400,
      'invalid_request',
    ],
    [
      'unknown subject_token_type',
      async () => ({
        grant_type: GRANT,
        subject_token: await idpToken(),
        subject_token_type: 'urn:x:saml',
        role: 'analyst',
      }),
      400,
      'invalid_request',
    ],
    [
      'a parameter twice',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: ['analyst', 'capped'],
      }),
      400,
      'invalid_request',
    ],
    [
      'actor_token without its type',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: 'analyst',
        actor_token: await idpToken(),
      }),
      400,
      'invalid_request',
    ],
    [
      'requested_token_type other than jwt',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: 'analyst',
        requested_token_type: 'urn:ietf:params:oauth:token-type:saml2',
      }),
      400,
      'invalid_request',
    ],
    [
      'no role',
      async () => ({ grant_type: GRANT, subject_token_type: JWT, subject_token: await idpToken() }),
      400,
      'invalid_request',
    ],
    [
      'narrow not JSON',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: 'analyst',
        narrow: '{relations',
      }),
      400,
      'invalid_request',
    ],
    [
      'narrow with an unknown key',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: 'analyst',
        narrow: '{"tables":[]}',
      }),
      400,
      'invalid_request',
    ],
    [
      'narrow with an unqualified relation',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: 'analyst',
        narrow: '{"relations":["orders"]}',
      }),
      400,
      'invalid_request',
    ],
    [
      'ttl not a number of seconds',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: 'analyst',
        ttl: '10m',
      }),
      400,
      'invalid_request',
    ],
    [
      'a foreign audience',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: 'analyst',
        audience: 'https://elsewhere',
      }),
      400,
      'invalid_target',
    ],
    [
      'a foreign resource',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: 'analyst',
        resource: 'https://elsewhere/api',
      }),
      400,
      'invalid_target',
    ],
    [
      'a scope that is not a role',
      async () => ({ grant_type: GRANT, subject_token_type: JWT, subject_token: await idpToken(), scope: 'openid' }),
      400,
      'invalid_scope',
    ],
    [
      'narrowing outside the role',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: 'analyst',
        narrow: '{"relations":["public.secrets"]}',
      }),
      400,
      'invalid_scope',
    ],
    [
      'write for a read-only role',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: 'analyst',
        narrow: '{"write":{"kinds":["insert"]}}',
      }),
      400,
      'invalid_scope',
    ],
    [
      'a role that is not a role name',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: 'x'.repeat(64),
      }),
      400,
      'invalid_scope',
    ],
    [
      'an unknown role',
      async () => ({ grant_type: GRANT, subject_token_type: JWT, subject_token: await idpToken(), role: 'root' }),
      400,
      'invalid_scope',
    ],
    [
      'a forged subject token',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken({}, otherKey),
        role: 'analyst',
      }),
      400,
      'invalid_grant',
    ],
    [
      'an expired subject token',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken({ iat: nowSec() - 600, exp: nowSec() - 300 }),
        role: 'analyst',
      }),
      400,
      'invalid_grant',
    ],
    [
      'a subject token for another audience',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken({ aud: 'someone-else' }),
        role: 'analyst',
      }),
      400,
      'invalid_grant',
    ],
    [
      'a subject token from an unknown issuer',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken({ iss: 'https://evil.test' }),
        role: 'analyst',
      }),
      400,
      'invalid_grant',
    ],
    [
      'an unsigned subject token',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ iss: IDP, aud: IDP_AUDIENCE, sub: 'alice', groups: ['analysts'], exp: nowSec() + 60 })).toString('base64url')}.`,
        role: 'analyst',
      }),
      400,
      'invalid_grant',
    ],
    [
      'a subject no rule names',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken({ sub: 'mallory', groups: ['guests'] }),
        role: 'analyst',
      }),
      400,
      'unauthorized_client',
    ],
    [
      'a role the subject’s rules do not give',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken({ sub: 'bob' }),
        role: 'writer',
      }),
      400,
      'invalid_scope',
    ],
    [
      'a rule that needs an actor, without one',
      async () => ({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken({ groups: [] }),
        role: 'capped',
      }),
      400,
      'invalid_scope',
    ],
    [
      'a rule that requires approval',
      async () => ({ grant_type: GRANT, subject_token_type: JWT, subject_token: await idpToken(), role: 'writer' }),
      400,
      'approval_required',
    ],
  ];
  it.each(cases)('%s → %i %s', async (_name, params, status, error) => {
    const res = await post(a.proxy.exchangePort ?? 0, await params());
    expect(res.status).toBe(status);
    expect(res.body.error).toBe(error);
    expect(typeof res.body.error_description).toBe('string');
    expect(res.body).not.toHaveProperty('access_token');
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  });

  it('refuses a body that is not form-encoded, a GET, and a body over exchange.maxBodyBytes', async () => {
    const port = a.proxy.exchangePort ?? 0;
    const json = await post(port, '{"grant_type":"x"}', { 'content-type': 'application/json' });
    expect([json.status, json.body.error]).toEqual([400, 'invalid_request']);
    const get = await fetch(`http://127.0.0.1:${port}/token`);
    expect(get.status).toBe(405);
    const big = await post(port, `grant_type=${GRANT}&pad=${'x'.repeat(20_000)}`);
    expect([big.status, big.body.error]).toEqual([413, 'invalid_request']);
    expect((await fetch(`http://127.0.0.1:${port}/elsewhere`)).status).toBe(404);
  });

  it('audits every issuance and refusal without a token, and logs none', async () => {
    const events = a.auditLines().map((l) => JSON.parse(l) as Record<string, unknown>);
    const issuedEvents = events.filter((e) => e.event === 'token_issued');
    const refused = events.filter((e) => e.event === 'token_refused');
    expect(issuedEvents.length).toBeGreaterThanOrEqual(issued.length);
    expect(refused.length).toBeGreaterThanOrEqual(cases.length);
    expect(issuedEvents[0]).toMatchObject({ rule: 'analysts', subjectIssuer: IDP, sub: 'alice', role: 'analyst' });
    expect(issuedEvents.every((e) => typeof e.jti === 'string' && typeof e.exp === 'string')).toBe(true);
    // A request needing approval is not refused: it is stored as pending (approvals.test.ts follows it through).
    expect(events.find((e) => e.event === 'approval_requested')).toMatchObject({
      rule: 'writers',
      role: 'writer',
      sub: 'alice',
    });
    const scrape = await a.proxy.metrics.registry.getSingleMetricAsString('pgwarden_token_exchanges_total');
    expect(scrape).toMatch(/pgwarden_token_exchanges_total\{result="issued",error=""\} [1-9]/);
    expect(scrape).toMatch(/pgwarden_token_exchanges_total\{result="pending",error="approval_required"\} [1-9]/);
    const trail = [...a.auditLines(), ...a.logs, ...b.auditLines(), ...b.logs].join('\n');
    for (const t of [...issued, ...presented]) {
      expect(trail).not.toContain(t);
      expect(trail).not.toContain(t.split('.')[2]);
    }
  });
});

describe('pgwarden token exchange (CLI)', () => {
  it('prints the token, or the JSON response, or the endpoint error in one line', async () => {
    const file = join(tmp.dir, 'subject.jwt');
    writeFileSync(file, `${await idpToken()}\n`, { mode: 0o600 });
    const url = `http://127.0.0.1:${a.proxy.exchangePort}`;
    const ok = await tokenExchange([
      '--url',
      url,
      '--subject-token-file',
      file,
      '--role',
      'analyst',
      '--ttl',
      '2m',
      '--narrow',
      '{"relations":["public.orders"]}',
    ]);
    expect(ok.code).toBe(0);
    const token = ok.stdout.trim();
    issued.push(token);
    expect(jose.decodeJwt(token)).toMatchObject({ role: 'analyst', pgwarden_narrow: { relations: ['public.orders'] } });
    expect((jose.decodeJwt(token).exp as number) - (jose.decodeJwt(token).iat as number)).toBe(120);
    const json = await tokenExchange([
      '--url',
      `${url}/token`,
      '--subject-token-file',
      file,
      '--role',
      'analyst',
      '--json',
    ]);
    expect(json.code).toBe(0);
    const body = JSON.parse(json.stdout) as Record<string, unknown>;
    issued.push(body.access_token as string);
    expect(body).toMatchObject({ token_type: 'N_A', expires_in: 300 });
    const refused = await tokenExchange(['--url', url, '--subject-token-file', file, '--role', 'writer']);
    expect(refused).toMatchObject({ code: 3, stdout: '' });
    expect(refused.stderr).toMatch(/^pgwarden: approval_required: /);
    expect(refused.stderr).toMatch(/\napproval id: apr_[A-Za-z0-9_-]{43} /);
    const clear = await tokenExchange([
      '--url',
      'http://pgwarden.example:8080',
      '--subject-token-file',
      file,
      '--role',
      'analyst',
    ]);
    expect(clear.code).toBe(2);
    expect(clear.stderr).toContain('must use https');
    expect((await tokenExchange(['--url', url, '--role', 'analyst'])).code).toBe(2);
  });

  it('runs as a process (bin/pgwarden.js), the subject token read from standard input', async () => {
    const child = execFile(
      process.execPath,
      [
        'bin/pgwarden.js',
        'token',
        'exchange',
        '--url',
        `http://127.0.0.1:${a.proxy.exchangePort}`,
        '--subject-token-file',
        '-',
        '--role',
        'analyst',
      ],
      { timeout: 30_000 },
    );
    const done = new Promise<{ code: number | null; stdout: string }>((resolve) => {
      let stdout = '';
      child.stdout?.on('data', (c) => (stdout += c));
      child.on('close', (code) => resolve({ code, stdout }));
    });
    try {
      child.stdin?.end(await idpToken());
      const { code, stdout } = await done;
      expect(code).toBe(0);
      issued.push(stdout.trim());
      const who = await query(a, stdout.trim(), "SELECT current_setting('pgwarden.sub') AS s");
      expect(who.rows[0].s).toBe('alice');
    } finally {
      if (child.exitCode === null && child.pid !== undefined) child.kill();
    }
  });
});

describe('revocation', () => {
  it('refuses to exchange a revoked parent token, or for a revoked subject', async () => {
    const parent = await exchange({ subject_token: await idpToken({ sub: 'carol' }), role: 'analyst' });
    expect(parent.status).toBe(200);
    const jti = jose.decodeJwt(parent.body.access_token as string).jti as string;
    writeFileSync(
      a.config.revocation?.file ?? '',
      `revoked:\n  - jti: ${jti}\n    reason: leaked\n  - sub: dave\n    reason: offboarded\n`,
    );
    await a.proxy.reload();
    const child = await exchange({ subject_token: parent.body.access_token as string, role: 'analyst' });
    expect([child.status, child.body.error]).toEqual([400, 'invalid_grant']);
    expect(child.body.error_description).toContain('leaked');
    const dave = await exchange({ subject_token: await idpToken({ sub: 'dave' }), role: 'analyst' });
    expect([dave.status, dave.body.error]).toEqual([400, 'invalid_grant']);
    expect(dave.body.error_description).toContain('offboarded');
    writeFileSync(a.config.revocation?.file ?? '', 'revoked: []\n');
    await a.proxy.reload();
  });
});

describe('issuing key rotation', () => {
  it('the new key signs at once; tokens of the replaced key keep logging in on every replica for the overlap', async () => {
    const before = await exchange({ subject_token: await idpToken({ sub: 'erin' }), role: 'analyst' });
    const oldKid = jose.decodeProtectedHeader(before.body.access_token as string).kid;
    await writeSigningKey(signingA, 'EdDSA');
    await a.proxy.reload();
    const after = await exchange({ subject_token: await idpToken({ sub: 'erin' }), role: 'analyst' });
    const header = jose.decodeProtectedHeader(after.body.access_token as string);
    expect(header.alg).toBe('EdDSA');
    expect(header.kid).not.toBe(oldKid);
    const jwks = (await (
      await fetch(`http://127.0.0.1:${a.proxy.exchangePort}/.well-known/jwks.json`)
    ).json()) as jose.JSONWebKeySet;
    expect(jwks.keys.map((k) => k.kid)).toEqual([header.kid, oldKid]);
    for (const tp of [a, b])
      for (const t of [before, after]) {
        const who = await query(tp, t.body.access_token as string, "SELECT current_setting('pgwarden.sub') AS s");
        expect(who.rows[0].s).toBe('erin');
      }
  });

  it('with no overlap, a token of the replaced key is refused at once', async () => {
    const file = join(tmp.dir, 'signing-c.pem');
    const write = async () => {
      await writeSigningKey(file);
    };
    await write();
    const c = await startTestProxy({
      policy: POLICY,
      auth: { keyOverlap: 0 },
      config: { exchange: exchangeConfig({ signingKeyFile: file }) },
    });
    try {
      const res = await exchange({ subject_token: await idpToken(), role: 'analyst' }, c.proxy.exchangePort);
      const token = res.body.access_token as string;
      await query(c, token, 'SELECT 1');
      await write();
      await c.proxy.reload();
      expect((await pgError(() => query(c, token, 'SELECT 1'))).code).toBe('28P01');
    } finally {
      await c.close();
    }
  });
});

const openssl = spawnSync('openssl', ['version']).status === 0;

describe.skipIf(!openssl)('HTTPS', () => {
  it('serves the endpoint over TLS with the configured pair, on any address', async () => {
    const key = join(tmp.dir, 'tls.key');
    const cert = join(tmp.dir, 'tls.crt');
    const r = spawnSync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ]);
    expect(r.status).toBe(0);
    const file = join(tmp.dir, 'signing-tls.pem');
    await writeSigningKey(file);
    const d = await startTestProxy({
      policy: POLICY,
      config: {
        exchange: exchangeConfig({
          signingKeyFile: file,
          listen: { host: '127.0.0.1', port: 0, tls: { certFile: cert, keyFile: key } },
        }),
      },
    });
    try {
      const https = await import('node:https');
      const body = new URLSearchParams({
        grant_type: GRANT,
        subject_token_type: JWT,
        subject_token: await idpToken(),
        role: 'analyst',
      }).toString();
      const answer = await new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
        const req = https.request(
          {
            host: '127.0.0.1',
            port: d.proxy.exchangePort,
            path: '/token',
            method: 'POST',
            ca: readFileSync(cert),
            servername: 'localhost',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
          },
          (res) => {
            let text = '';
            res.on('data', (c) => (text += c));
            res.on('end', () =>
              resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }),
            );
          },
        );
        req.on('error', reject);
        req.end(body);
      });
      expect(answer.status).toBe(200);
      issued.push(answer.json.access_token as string);
      // Plain HTTP to the TLS port gets no token.
      await expect(fetch(`http://127.0.0.1:${d.proxy.exchangePort}/token`, { method: 'POST', body })).rejects.toThrow();
    } finally {
      await d.close();
    }
  });
});

describe('issuer confusion', () => {
  it('a token claiming the exchange issuer is checked with the issuing keys only, and an auth token is not a subject token', async () => {
    const now = nowSec();
    const claims = { iss: ISSUER, aud: 'pgwarden', sub: 'alice', role: 'analyst', iat: now, exp: now + 60, jti: 'x1' };
    // Signed with the auth HMAC secret: HS256 is not an issuing algorithm, so the issued-token verifier refuses it.
    const hmac = await a.sign(claims);
    expect((await pgError(() => query(a, hmac, 'SELECT 1'))).code).toBe('28P01');
    // Signed with the IdP's key under a kid the issuer never published.
    const idpSigned = await signToken(idpKey.privateKey, claims, { alg: 'ES256', kid: idpKey.kid });
    expect((await pgError(() => query(a, idpSigned, 'SELECT 1'))).code).toBe('28P01');
    const asParent = await exchange({ subject_token: idpSigned, role: 'analyst' });
    expect(asParent.body.error).toBe('invalid_grant');
    // A token pgwarden accepts at login (auth.issuer) is not an identity to exchange.
    const minted = await a.token({ sub: 'alice', role: 'analyst' });
    const viaMint = await exchange({ subject_token: minted, role: 'analyst' });
    expect(viaMint.body.error).toBe('invalid_grant');
    // An issued token is not an actor token.
    const issuedToken = (await exchange({ subject_token: await idpToken(), role: 'analyst' })).body
      .access_token as string;
    const asActor = await exchange({
      subject_token: await idpToken(),
      role: 'analyst',
      actor_token: issuedToken,
      actor_token_type: JWT,
    });
    expect(asActor.body.error).toBe('invalid_grant');
    // The IdP token itself never logs in.
    expect((await pgError(async () => query(a, await idpToken(), 'SELECT 1'))).code).toBe('28P01');
  });
});

describe('rate limit', () => {
  it('answers 429 with Retry-After past exchange.requestsPerMinute from one address', async () => {
    const file = join(tmp.dir, 'signing-e.pem');
    await writeSigningKey(file);
    const e = await startTestProxy({
      policy: POLICY,
      config: { exchange: exchangeConfig({ signingKeyFile: file, requestsPerMinute: 2 }) },
    });
    try {
      const port = e.proxy.exchangePort ?? 0;
      expect((await exchange({ subject_token: await idpToken(), role: 'analyst' }, port)).status).toBe(200);
      expect((await exchange({ subject_token: await idpToken(), role: 'analyst' }, port)).status).toBe(200);
      const third = await exchange({ subject_token: await idpToken(), role: 'analyst' }, port);
      expect([third.status, third.body.error]).toEqual([429, 'temporarily_unavailable']);
      expect(Number(third.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(third.headers.get('cache-control')).toBe('no-store');
    } finally {
      await e.close();
    }
  });
});

describe('hot reload', () => {
  it('follows the policy file: a rule removed stops issuing, an invalid file changes nothing', async () => {
    const ask = async () => (await exchange({ subject_token: await idpToken({ sub: 'frank' }), role: 'analyst' })).body;
    expect((await ask()).access_token).toBeDefined();
    try {
      writeFileSync(a.policyFile, POLICY.replace('roles: [analyst]\n      maxLifetime: 10m', 'roles: [capped]'));
      await a.proxy.reload();
      expect((await ask()).error).toBe('invalid_scope');
      writeFileSync(a.policyFile, `${POLICY}    - id: broken\n      roles: [nobody]\n`);
      await a.proxy.reload();
      expect((await ask()).error).toBe('invalid_scope');
    } finally {
      writeFileSync(a.policyFile, POLICY);
      await a.proxy.reload();
    }
    expect((await ask()).access_token).toBeDefined();
  });
});
