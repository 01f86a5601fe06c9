// Token verification: each key source, each refusal reason (by code, SQLSTATE and reason), JWKS rotation, and token-free errors.
import { createHmac } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import * as jose from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createTokenVerifier,
  type AuthFailureReason,
  type TokenVerifier,
  type VerifyResult,
} from '../../../proxy/auth/jwt.ts';
import type { AuthConfig } from '../../../proxy/config/types.ts';
import {
  b64json,
  generateKeyFiles,
  makeTempDir,
  signToken,
  testAuthConfig,
  validClaims,
  writeHmacSecret,
  writeJwks,
  type TestKeyPair,
} from '../../helpers/keys.ts';

// A fixed clock: 2026-11-22T10:00:00Z. Claims are checked against it, never against the machine's time.
const NOW_MS = Date.UTC(2026, 10, 22, 10, 0, 0);
const NOW = NOW_MS / 1000;

const roles = new Set(['analyst', 'admin']);
const ctx = { roleExists: (role: string) => roles.has(role) };

let tmp: ReturnType<typeof makeTempDir>;
let dir: string;
const verifiers: TokenVerifier[] = [];
const servers: Server[] = [];

beforeEach(() => {
  tmp = makeTempDir('pgwarden-jwt-');
  dir = tmp.dir;
});
afterEach(async () => {
  for (const v of verifiers.splice(0)) v.close();
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
  tmp.cleanup();
});

async function verifierFor(auth: Partial<AuthConfig>, now: () => number = () => NOW_MS): Promise<TokenVerifier> {
  const v = await createTokenVerifier(testAuthConfig(auth), { now });
  verifiers.push(v);
  return v;
}

async function hmacSetup(auth: Partial<AuthConfig> = {}): Promise<{ verifier: TokenVerifier; secret: Uint8Array }> {
  const { path, secret } = writeHmacSecret(dir);
  return { verifier: await verifierFor({ secretFile: path, ...auth }), secret };
}

/** Assert a refusal by reason, code and SQLSTATE, and that nothing the client or log sees holds the token. */
function expectRefused(
  result: VerifyResult,
  reason: AuthFailureReason,
  token: string,
): Extract<VerifyResult, { ok: false }> {
  expect(result.ok).toBe(false);
  if (result.ok) throw new Error('unreachable');
  expect(result.reason).toBe(reason);
  const rejected = reason === 'unknown_role' || reason === 'revoked' || reason === 'invalid_narrowing';
  expect(result.error.code).toBe(rejected ? 'ERR_TOKEN_REJECTED' : 'ERR_TOKEN_INVALID');
  expect(result.error.sqlstate).toBe(rejected ? '28000' : '28P01');
  expect(result.error.severity).toBe('FATAL');
  expect(result.error.hint).toMatch(/token.*password/i);
  expectNoTokenIn(result.error, token);
  return result;
}

function expectNoTokenIn(
  error: Error & { detail?: string | undefined; hint?: string | undefined },
  token: string,
): void {
  const segments = token.split('.').filter((s) => s.length >= 8);
  const visible = [
    error.message,
    error.detail ?? '',
    error.hint ?? '',
    String(error),
    error.stack ?? '',
    JSON.stringify(error),
    causeText(error),
  ].join('\n');
  if (token.length > 0) expect(visible).not.toContain(token);
  for (const segment of segments) expect(visible).not.toContain(segment);
}

function causeText(err: unknown): string {
  let text = '';
  for (let c = (err as { cause?: unknown }).cause; c !== undefined; c = (c as { cause?: unknown }).cause) {
    text += c instanceof Error ? `${c.message}\n${c.stack ?? ''}` : String(c);
    if (!(c instanceof Error)) break;
  }
  return text;
}

describe('HS256', () => {
  it('verifies a valid token into an Identity', async () => {
    const { verifier, secret } = await hmacSetup();
    const token = await signToken(
      secret,
      validClaims(NOW, { agent: 'agent-7', tenant: 't1', jti: 'id-1', nbf: NOW - 5 }),
      { alg: 'HS256', typ: 'JWT' },
    );
    const result = await verifier.verify(token, ctx);
    expect(result).toEqual({
      ok: true,
      identity: {
        sub: 'alice',
        role: 'analyst',
        agent: 'agent-7',
        tenant: 't1',
        jti: 'id-1',
        iss: 'pgwarden-test',
        exp: NOW + 300,
        iat: NOW,
        nbf: NOW - 5,
      },
    });
  });

  it('takes the agent from RFC 8693 act.sub when there is no agent claim', async () => {
    const { verifier, secret } = await hmacSetup();
    const token = await signToken(secret, validClaims(NOW, { act: { sub: 'copilot-42', iss: 'x' } }), { alg: 'HS256' });
    const result = await verifier.verify(token, ctx);
    expect(result.ok && result.identity.agent).toBe('copilot-42');
    const both = await signToken(secret, validClaims(NOW, { agent: 'explicit', act: { sub: 'actor' } }), {
      alg: 'HS256',
    });
    const r2 = await verifier.verify(both, ctx);
    expect(r2.ok && r2.identity.agent).toBe('explicit');
    const badAct = await signToken(secret, validClaims(NOW, { act: 'actor' }), { alg: 'HS256' });
    expectRefused(await verifier.verify(badAct, ctx), 'missing_claim', badAct);
  });

  it('carries the act chain, current actor first, and refuses a malformed or over-deep one', async () => {
    const { verifier, secret } = await hmacSetup();
    const chain = await signToken(secret, validClaims(NOW, { act: { sub: 'bot', act: { sub: 'workflow' } } }), {
      alg: 'HS256',
    });
    const r = await verifier.verify(chain, ctx);
    expect(r.ok && r.identity.act).toEqual(['bot', 'workflow']);
    const plain = await verifier.verify(await signToken(secret, validClaims(NOW), { alg: 'HS256' }), ctx);
    expect(plain.ok && 'act' in plain.identity).toBe(false);
    let deep: Record<string, unknown> = { sub: 'a0' };
    for (let i = 1; i <= 8; i++) deep = { sub: `a${i}`, act: deep };
    const tooDeep = await signToken(secret, validClaims(NOW, { act: deep }), { alg: 'HS256' });
    expectRefused(await verifier.verify(tooDeep, ctx), 'missing_claim', tooDeep);
    const badInner = await signToken(secret, validClaims(NOW, { agent: 'x', act: { sub: 'bot', act: { sub: 3 } } }), {
      alg: 'HS256',
    });
    expectRefused(await verifier.verify(badInner, ctx), 'missing_claim', badInner);
  });

  it('carries the parent jtis of an exchanged token, and refuses a malformed or over-long list', async () => {
    const { verifier, secret } = await hmacSetup();
    const sign = (v: unknown) => signToken(secret, validClaims(NOW, { pgwarden_parent_jtis: v }), { alg: 'HS256' });
    const ok = await verifier.verify(await sign(['p1', 'p0']), ctx);
    expect(ok.ok && ok.identity.parentJtis).toEqual(['p1', 'p0']);
    // Revoking a parent revokes the token (the login's isRevoked sees the whole list).
    const revokedParent = await verifier.verify(await sign(['p1', 'p0']), {
      ...ctx,
      isRevoked: (id) => (id.parentJtis?.includes('p0') ? 'leaked' : undefined),
    });
    expect(!revokedParent.ok && revokedParent.reason).toBe('revoked');
    for (const bad of ['p1', [], [''], [3], Array.from({ length: 9 }, (_, i) => `p${i}`), ['a\u0000b']]) {
      const t = await sign(bad);
      expectRefused(await verifier.verify(t, ctx), 'missing_claim', t);
    }
  });

  it('accepts tokens several KB long with big claims', async () => {
    const { verifier, secret } = await hmacSetup();
    for (const size of [4 * 1024, 16 * 1024]) {
      const token = await signToken(
        secret,
        validClaims(NOW, { scope: 'x'.repeat(size), groups: Array.from({ length: 50 }, (_, i) => `group-${i}`) }),
        { alg: 'HS256' },
      );
      expect(token.length).toBeGreaterThan(size);
      const result = await verifier.verify(token, ctx);
      expect(result.ok).toBe(true);
    }
  });

  it('uses ctx.now over the verifier clock', async () => {
    const { verifier, secret } = await hmacSetup();
    const token = await signToken(secret, validClaims(NOW), { alg: 'HS256' });
    expect((await verifier.verify(token, ctx)).ok).toBe(true);
    const later = await verifier.verify(token, { ...ctx, now: NOW_MS + 400_000 });
    expectRefused(later, 'expired', token);
  });
});

describe('refusals', () => {
  let verifier: TokenVerifier;
  let secret: Uint8Array;
  const sign = (payload: jose.JWTPayload, header: jose.JWTHeaderParameters = { alg: 'HS256' }) =>
    signToken(secret, payload, header);

  beforeEach(async () => {
    ({ verifier, secret } = await hmacSetup());
  });

  it.each([
    ['a password', 'hunter2'],
    ['an empty string', ''],
    ['two segments', 'abc.def'],
    ['a non-JSON header', 'bm90IGpzb24.eyJzdWIiOiJ4In0.c2ln'],
    ['a header that is not an object', `${b64json([1, 2])}.${b64json({})}.c2ln`],
    ['non-base64url characters', 'a+b.c/d.e='],
    ['a token over 64 KiB', `${'a'.repeat(70_000)}.b.c`],
  ])('refuses %s as not a JWT', async (_name, password) => {
    const result = expectRefused(await verifier.verify(password, ctx), 'not_a_jwt', password);
    if (password.length < 100) expect(result.error.message).toBe('password is not a JWT');
  });

  it('refuses a bad signature and a tampered payload', async () => {
    const other = await signToken(new Uint8Array(32).fill(7), validClaims(NOW), { alg: 'HS256' });
    const r = expectRefused(await verifier.verify(other, ctx), 'bad_signature', other);
    expect(r.error.message).toBe('token signature is invalid');
    const good = await sign(validClaims(NOW));
    const [h, , s] = good.split('.');
    const tampered = `${h}.${b64json(validClaims(NOW, { role: 'admin' }))}.${s}`;
    expectRefused(await verifier.verify(tampered, ctx), 'bad_signature', tampered);
  });

  it('refuses alg none and algorithms not configured', async () => {
    const none = `${b64json({ alg: 'none', typ: 'JWT' })}.${b64json(validClaims(NOW))}.`;
    expectRefused(await verifier.verify(none, ctx), 'algorithm_not_allowed', none);
    const noneUpper = `${b64json({ alg: 'NONE' })}.${b64json(validClaims(NOW))}.`;
    expectRefused(await verifier.verify(noneUpper, ctx), 'algorithm_not_allowed', noneUpper);
    const hs512 = await sign(validClaims(NOW), { alg: 'HS512' });
    expectRefused(await verifier.verify(hs512, ctx), 'algorithm_not_allowed', hs512);
    const noAlg = `${b64json({ typ: 'JWT' })}.${b64json(validClaims(NOW))}.c2ln`;
    expectRefused(await verifier.verify(noAlg, ctx), 'algorithm_not_allowed', noAlg);
  });

  it('refuses an expired token, even within the clock skew (the session would end at exp at once)', async () => {
    const token = await sign(validClaims(NOW - 600, { exp: NOW - 31 }));
    const r = expectRefused(await verifier.verify(token, ctx), 'expired', token);
    expect(r.error.message).toBe(`token expired at ${new Date((NOW - 31) * 1000).toISOString()}`);
    const withinSkew = await sign(validClaims(NOW - 600, { exp: NOW - 20 }));
    const r2 = expectRefused(await verifier.verify(withinSkew, ctx), 'expired', withinSkew);
    expect(r2.error.message).toBe(`token expired at ${new Date((NOW - 20) * 1000).toISOString()}`);
    const atNow = await sign(validClaims(NOW - 600, { exp: NOW }));
    expectRefused(await verifier.verify(atNow, ctx), 'expired', atNow);
    // The skew still forgives an issuer whose clock runs ahead.
    const issuedAhead = await sign(validClaims(NOW + 20, { exp: NOW + 200 }));
    expect((await verifier.verify(issuedAhead, ctx)).ok).toBe(true);
  });

  it('refuses a token whose exp is not after its iat', async () => {
    // iat within the skew ahead of the clock, exp still in the future: only exp ≤ iat is wrong.
    for (const exp of [NOW + 20, NOW + 10]) {
      const token = await sign(validClaims(NOW + 20, { exp }));
      const r = expectRefused(await verifier.verify(token, ctx), 'invalid_lifetime', token);
      expect(r.error.message).toContain('not after its issue time');
    }
  });

  it('refuses a token not yet valid (nbf, or iat in the future)', async () => {
    const nbf = await sign(validClaims(NOW, { nbf: NOW + 120 }));
    const r = expectRefused(await verifier.verify(nbf, ctx), 'not_yet_valid', nbf);
    expect(r.error.message).toBe(`token is not valid before ${new Date((NOW + 120) * 1000).toISOString()}`);
    // An iat far ahead would otherwise let a short exp − iat hide a long life.
    const future = await sign(validClaims(NOW + 3_600, { exp: NOW + 3_600 + 300 }));
    expectRefused(await verifier.verify(future, ctx), 'not_yet_valid', future);
  });

  it('refuses the wrong issuer and audience, naming the expected ones', async () => {
    const iss = await sign(validClaims(NOW, { iss: 'someone-else' }));
    const r1 = expectRefused(await verifier.verify(iss, ctx), 'wrong_issuer', iss);
    expect(r1.error.message).toBe('token issuer does not match "pgwarden-test"');
    const aud = await sign(validClaims(NOW, { aud: ['other', 'another'] }));
    const r2 = expectRefused(await verifier.verify(aud, ctx), 'wrong_audience', aud);
    expect(r2.error.message).toBe('token audience does not match "pgwarden"');
  });

  it('refuses a lifetime over the maximum', async () => {
    const token = await sign(validClaims(NOW, { exp: NOW + 3600 }));
    const r = expectRefused(await verifier.verify(token, ctx), 'lifetime_exceeded', token);
    expect(r.error.message).toBe('token lifetime 3600s exceeds the maximum of 900s');
    const exactlyMax = await sign(validClaims(NOW, { exp: NOW + 900 }));
    expect((await verifier.verify(exactlyMax, ctx)).ok).toBe(true);
  });

  it.each<[string, Record<string, unknown>]>([
    ['sub', { sub: undefined }],
    ['role', { role: undefined }],
    ['iat', { iat: undefined }],
    ['exp', { exp: undefined }],
    ['role (not a string)', { role: 42 }],
    ['sub (empty)', { sub: '' }],
    ['exp (not a number)', { exp: 'tomorrow' }],
    ['agent (not a string)', { agent: { name: 'x' } }],
    ['aud', { aud: undefined }],
  ])('refuses a missing or malformed %s claim', async (_name, change) => {
    const payload: Record<string, unknown> = { ...validClaims(NOW), ...change };
    for (const [k, v] of Object.entries(payload)) if (v === undefined) delete payload[k];
    const token = await sign(payload as jose.JWTPayload);
    // A missing aud is a missing claim (the token names no audience at all), not a wrong one.
    expectRefused(await verifier.verify(token, ctx), 'missing_claim', token);
  });

  it.each([
    ['sub', 'x'.repeat(1025)],
    ['jti', 'j'.repeat(20_000)],
    ['agent', 'é'.repeat(513)],
    ['tenant', 'a\0b'],
    ['jti', 'a\0b'],
  ])(
    'refuses an identity claim %s too long or with a NUL (it is stamped upstream, where it could not log in)',
    async (name, value) => {
      const token = await sign({ ...validClaims(NOW), [name]: value } as jose.JWTPayload);
      const r = expectRefused(await verifier.verify(token, ctx), 'missing_claim', token);
      expect(r.error.message).toContain(`token claim "${name}"`);
    },
  );

  it('accepts identity claims of exactly the maximum length', async () => {
    const token = await sign({ ...validClaims(NOW), sub: 's'.repeat(1024), jti: 'é'.repeat(512) } as jose.JWTPayload);
    expect((await verifier.verify(token, ctx)).ok).toBe(true);
  });

  it('names the missing claim', async () => {
    const { role: _role, ...noRole } = validClaims(NOW);
    const token = await sign(noRole);
    const r = expectRefused(await verifier.verify(token, ctx), 'missing_claim', token);
    expect(r.error.message).toBe('token is missing the "role" claim');
  });

  it('rejects an unknown role with 28000, naming the role', async () => {
    const token = await sign(validClaims(NOW, { role: 'x' }));
    const r = expectRefused(await verifier.verify(token, ctx), 'unknown_role', token);
    expect(r.error.message).toBe('token role "x" is not defined in the policy');
  });

  it('rejects a revoked token with 28000 and the revocation reason', async () => {
    const token = await sign(validClaims(NOW, { jti: 'leaked-1' }));
    const r = expectRefused(
      await verifier.verify(token, {
        ...ctx,
        isRevoked: (id) => (id.jti === 'leaked-1' ? 'leaked in a log' : undefined),
      }),
      'revoked',
      token,
    );
    expect(r.error.message).toContain('leaked in a log');
    const fine = await sign(validClaims(NOW, { jti: 'ok-1' }));
    expect((await verifier.verify(fine, { ...ctx, isRevoked: () => undefined })).ok).toBe(true);
  });

  it('refuses crit headers it does not understand and unencoded payloads', async () => {
    // Built by hand: jose will not sign either.
    const hs256 = (header: object, payload: string): string => {
      const input = `${b64json(header)}.${payload}`;
      return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
    };
    const crit = hs256({ alg: 'HS256', crit: ['exp-ext'], 'exp-ext': 1 }, b64json(validClaims(NOW)));
    expectRefused(await verifier.verify(crit, ctx), 'not_a_jwt', crit);
    const unencoded = hs256({ alg: 'HS256', b64: false, crit: ['b64'] }, b64json(validClaims(NOW)));
    expectRefused(await verifier.verify(unencoded, ctx), 'not_a_jwt', unencoded);
  });
});

describe('asymmetric keys from files', () => {
  it.each([
    ['RS256', 'publicPemPath'],
    ['RS256', 'publicJwkPath'],
    ['PS256', 'publicPemPath'],
    ['ES256', 'publicPemPath'],
    ['ES256', 'publicJwkPath'],
    ['ES384', 'publicJwkPath'],
    ['EdDSA', 'publicPemPath'],
  ] as const)('verifies %s with the key from %s', async (alg, file) => {
    const pair = await generateKeyFiles(dir, alg);
    const verifier = await verifierFor({ algorithms: [alg], publicKeyFile: pair[file] });
    const token = await signToken(pair.privateKey, validClaims(NOW), { alg, kid: pair.kid });
    const result = await verifier.verify(token, ctx);
    expect(result.ok).toBe(true);
    const attacker = await generateKeyFiles(dir, alg);
    const forged = await signToken(attacker.privateKey, validClaims(NOW), { alg });
    expectRefused(await verifier.verify(forged, ctx), 'bad_signature', forged);
  });

  it('verifies against a local JWKS file by kid, and tries each key when there is no kid', async () => {
    const a = await generateKeyFiles(dir, 'RS256', 'a');
    const b = await generateKeyFiles(dir, 'RS256', 'b');
    const ec = await generateKeyFiles(dir, 'ES256', 'c');
    const verifier = await verifierFor({
      algorithms: ['RS256', 'ES256'],
      publicKeyFile: writeJwks(dir, [a.publicJwk, b.publicJwk, ec.publicJwk]),
    });
    for (const pair of [a, b, ec]) {
      const token = await signToken(pair.privateKey, validClaims(NOW), { alg: pair.alg, kid: pair.kid });
      expect((await verifier.verify(token, ctx)).ok).toBe(true);
    }
    const noKid = await signToken(b.privateKey, validClaims(NOW), { alg: 'RS256' });
    expect((await verifier.verify(noKid, ctx)).ok).toBe(true);
    const unknownKid = await signToken(b.privateKey, validClaims(NOW), { alg: 'RS256', kid: 'zzz' });
    expectRefused(await verifier.verify(unknownKid, ctx), 'key_unavailable', unknownKid);
  });

  it('refuses an allowed algorithm the key cannot serve', async () => {
    const rsa = await generateKeyFiles(dir, 'RS256');
    const ec = await generateKeyFiles(dir, 'ES256');
    const verifier = await verifierFor({ algorithms: ['RS256', 'ES256'], publicKeyFile: rsa.publicPemPath });
    const token = await signToken(ec.privateKey, validClaims(NOW), { alg: 'ES256' });
    expectRefused(await verifier.verify(token, ctx), 'algorithm_not_allowed', token);
  });

  it('fails at startup when the key fits none of the algorithms, or HS* is mixed with a public key', async () => {
    const rsa = await generateKeyFiles(dir, 'RS256');
    await expect(
      createTokenVerifier(testAuthConfig({ algorithms: ['ES256'], publicKeyFile: rsa.publicPemPath })),
    ).rejects.toThrow(/fits none/);
    await expect(
      createTokenVerifier(testAuthConfig({ algorithms: ['RS256', 'HS256'], publicKeyFile: rsa.publicPemPath })),
    ).rejects.toThrow(TypeError);
    const short = writeHmacSecret(dir, 16, 'short');
    await expect(createTokenVerifier(testAuthConfig({ secretFile: short.path }))).rejects.toThrow(/at least 32/);
  });
});

describe('attacks on the key choice', () => {
  let rsa: TestKeyPair;
  let verifier: TokenVerifier;

  beforeEach(async () => {
    rsa = await generateKeyFiles(dir, 'RS256', 'real');
    verifier = await verifierFor({ algorithms: ['RS256'], publicKeyFile: rsa.publicPemPath });
  });

  it('refuses HS256 signed with the RS256 public key as the secret (algorithm confusion)', async () => {
    const pemBytes = new Uint8Array(readFileSync(rsa.publicPemPath));
    const spkiDer = new Uint8Array(
      Buffer.from((await jose.exportSPKI(rsa.publicKey)).replace(/-----[^-]+-----|\s/g, ''), 'base64'),
    );
    for (const secret of [pemBytes, spkiDer]) {
      const token = await signToken(secret, validClaims(NOW), { alg: 'HS256' });
      expectRefused(await verifier.verify(token, ctx), 'algorithm_not_allowed', token);
    }
  });

  it('refuses jwk, jku, x5u and x5c headers (never fetched, never used)', async () => {
    let fetched = 0;
    const evil = await generateKeyFiles(dir, 'RS256', 'evil');
    const server = createServer((_req, res) => {
      fetched++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [evil.publicJwk] }));
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const evilUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
    const headers: jose.JWTHeaderParameters[] = [
      { alg: 'RS256', jwk: evil.publicJwk },
      { alg: 'RS256', kid: 'evil', jku: evilUrl },
      { alg: 'RS256', kid: 'real', x5u: evilUrl },
      { alg: 'RS256', kid: 'real', x5c: ['MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA'] },
    ];
    for (const header of headers) {
      const token = await signToken(evil.privateKey, validClaims(NOW, { role: 'admin' }), header);
      const r = expectRefused(await verifier.verify(token, ctx), 'header_not_allowed', token);
      expect(r.error.message).toMatch(/token header parameter "(jwk|jku|x5u|x5c)" is not accepted/);
    }
    // Even when signed with the real key: the parameter itself is refused.
    const real = await signToken(rsa.privateKey, validClaims(NOW), { alg: 'RS256', jku: evilUrl });
    expectRefused(await verifier.verify(real, ctx), 'header_not_allowed', real);
    expect((await verifier.verify(await signToken(rsa.privateKey, validClaims(NOW), { alg: 'RS256' }), ctx)).ok).toBe(
      true,
    );
    expect(fetched).toBe(0);
  });
});

describe('remote JWKS', () => {
  interface JwksServer {
    url: string;
    hits(): number;
    serve(keys: jose.JWK[]): void;
    mode: 'ok' | 'error' | 'hang' | 'redirect' | 'huge';
  }

  async function startJwksServer(keys: jose.JWK[]): Promise<JwksServer> {
    let body = JSON.stringify({ keys });
    let hits = 0;
    const state: JwksServer = {
      url: '',
      hits: () => hits,
      serve: (next) => {
        body = JSON.stringify({ keys: next });
      },
      mode: 'ok',
    };
    const server = createServer((_req, res) => {
      hits++;
      switch (state.mode) {
        case 'ok':
          res.setHeader('content-type', 'application/json');
          res.end(body);
          return;
        case 'error':
          res.statusCode = 500;
          res.end('oops');
          return;
        case 'hang':
          return; // never answers; the fetch timeout must end the wait
        case 'redirect':
          res.statusCode = 302;
          res.setHeader('location', 'https://attacker.example/jwks.json');
          res.end();
          return;
        case 'huge':
          // Chunked, so only the streaming cap (not Content-Length) can stop it.
          res.setHeader('content-type', 'application/json');
          res.write(`{"keys":[],"pad":"${'x'.repeat(600 * 1024)}`);
          res.end('"}');
          return;
      }
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
    return state;
  }

  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('fetches once, refetches for a new kid after the cooldown, refuses an unknown kid, and drops removed keys', async () => {
    const k1 = await generateKeyFiles(dir, 'RS256', 'k1');
    const k2 = await generateKeyFiles(dir, 'ES256', 'k2');
    const jwks = await startJwksServer([k1.publicJwk]);
    const verifier = await verifierFor({
      algorithms: ['RS256', 'ES256'],
      jwksUrl: jwks.url,
      jwksCooldown: 200,
      jwksCacheMaxAge: 800,
    });
    const t1 = await signToken(k1.privateKey, validClaims(NOW), { alg: 'RS256', kid: 'k1' });
    const t2 = await signToken(k2.privateKey, validClaims(NOW), { alg: 'ES256', kid: 'k2' });

    expect((await verifier.verify(t1, ctx)).ok).toBe(true);
    expect((await verifier.verify(t1, ctx)).ok).toBe(true);
    expect(jwks.hits()).toBe(1);

    // Rotation: k2 is published. Within the cooldown an unknown kid does not refetch (no hammering).
    jwks.serve([k1.publicJwk, k2.publicJwk]);
    expectRefused(await verifier.verify(t2, ctx), 'key_unavailable', t2);
    expect(jwks.hits()).toBe(1);
    await sleep(250);
    // After the cooldown, the new kid triggers a refetch and verifies.
    expect((await verifier.verify(t2, ctx)).ok).toBe(true);
    expect(jwks.hits()).toBe(2);

    // An unknown kid after the cooldown: one refetch, still no key, refused.
    await sleep(250);
    const stranger = await generateKeyFiles(dir, 'RS256', 'k9');
    const t9 = await signToken(stranger.privateKey, validClaims(NOW), { alg: 'RS256', kid: 'k9' });
    const r9 = expectRefused(await verifier.verify(t9, ctx), 'key_unavailable', t9);
    expect(r9.error.message).toMatch(/no configured key/);
    expect(jwks.hits()).toBe(3);

    // k1 is retired; once the cache ages out, tokens signed by k1 are refused.
    jwks.serve([k2.publicJwk]);
    await sleep(850);
    expectRefused(await verifier.verify(t1, ctx), 'key_unavailable', t1);
    expect((await verifier.verify(t2, ctx)).ok).toBe(true);
  });

  it.each(['error', 'redirect', 'huge'] as const)(
    'refuses with key_unavailable when the endpoint answers %s',
    async (mode) => {
      const k1 = await generateKeyFiles(dir, 'RS256', 'k1');
      const jwks = await startJwksServer([k1.publicJwk]);
      jwks.mode = mode;
      const verifier = await verifierFor({ algorithms: ['RS256'], jwksUrl: jwks.url });
      const token = await signToken(k1.privateKey, validClaims(NOW), { alg: 'RS256', kid: 'k1' });
      const r = expectRefused(await verifier.verify(token, ctx), 'key_unavailable', token);
      expect(r.error.message).toBe('the keys to verify the token could not be fetched');
    },
  );

  it('gives up on a JWKS endpoint that never answers after jwksTimeout', async () => {
    const k1 = await generateKeyFiles(dir, 'RS256', 'k1');
    const jwks = await startJwksServer([k1.publicJwk]);
    jwks.mode = 'hang';
    const verifier = await verifierFor({ algorithms: ['RS256'], jwksUrl: jwks.url, jwksTimeout: 200 });
    const token = await signToken(k1.privateKey, validClaims(NOW), { alg: 'RS256', kid: 'k1' });
    const started = Date.now();
    expectRefused(await verifier.verify(token, ctx), 'key_unavailable', token);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('refuses tokens after close()', async () => {
    const k1 = await generateKeyFiles(dir, 'RS256', 'k1');
    const jwks = await startJwksServer([k1.publicJwk]);
    const verifier = await verifierFor({ algorithms: ['RS256'], jwksUrl: jwks.url });
    const token = await signToken(k1.privateKey, validClaims(NOW), { alg: 'RS256', kid: 'k1' });
    expect((await verifier.verify(token, ctx)).ok).toBe(true);
    verifier.close();
    expectRefused(await verifier.verify(token, ctx), 'key_unavailable', token);
  });
});

describe('pgwarden_narrow claim', () => {
  let verifier: TokenVerifier;
  let secret: Uint8Array;
  beforeEach(async () => {
    ({ verifier, secret } = await hmacSetup());
  });

  it('reads a narrowing into Identity.narrowing; a token without the claim has none', async () => {
    const narrow = { relations: ['public.orders'], maxRows: 5, columns: { 'public.orders': ['id'] } };
    const r = await verifier.verify(
      await signToken(secret, validClaims(NOW, { pgwarden_narrow: narrow }), { alg: 'HS256' }),
      ctx,
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.identity.narrowing?.relations).toEqual([{ schema: 'public', name: 'orders' }]);
    expect(r.identity.narrowing?.maxRows).toBe(5);
    expect(r.identity.narrowing?.digest).toMatch(/^[0-9a-f]{64}$/);
    const plain = await verifier.verify(await signToken(secret, validClaims(NOW), { alg: 'HS256' }), ctx);
    expect(plain.ok && plain.identity.narrowing).toBeUndefined();
    expect(plain.ok && 'narrowing' in plain.identity).toBe(false);
  });

  it.each([
    ['a string', 'public.orders', 'token claim pgwarden_narrow must be a JSON object (got string "public.orders")'],
    ['null', null, 'token claim pgwarden_narrow must be a JSON object (got null)'],
    ['an unknown key', { tables: [] }, 'token claim pgwarden_narrow has an unknown key "tables"'],
    [
      'an unqualified relation',
      { relations: ['orders'] },
      'token claim pgwarden_narrow.relations[0] "orders" must be schema-qualified',
    ],
    ['a wrong type', { maxRows: '5' }, 'token claim pgwarden_narrow.maxRows must be an integer from 1'],
  ])('refuses %s at login with 28000 invalid_narrowing, reason credential_invalid', async (_what, value, message) => {
    const token = await signToken(secret, validClaims(NOW, { pgwarden_narrow: value }), { alg: 'HS256' });
    const r = expectRefused(await verifier.verify(token, ctx), 'invalid_narrowing', token);
    expect(r.error.message.startsWith(message)).toBe(true);
    expect(r.error.reason).toBe('credential_invalid');
  });
});
