// loadConfig's exchange section: defaults, the listener refused off loopback without TLS, the issuer kept apart from auth's, the signing key checked, the IdP's key source pinned.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as jose from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatConfigIssues, loadConfig, type ConfigIssue } from '../../../proxy/config/load.ts';
import type { Config } from '../../../proxy/config/types.ts';
import { generateKeyFiles, makeTempDir, writeHmacSecret } from '../../helpers/keys.ts';

let tmp: ReturnType<typeof makeTempDir>;
let dir: string;

beforeEach(async () => {
  tmp = makeTempDir('pgwarden-config-');
  dir = tmp.dir;
  mkdirSync(join(dir, 'secrets'));
  writeHmacSecret(join(dir, 'secrets'), 48, 'jwt-secret');
  writeFileSync(join(dir, 'policy.yaml'), 'roles: {}\n');
  for (const alg of ['ES256', 'EdDSA', 'RS256'] as const) {
    const { privateKey } = await jose.generateKeyPair(alg, { extractable: true });
    writeFileSync(join(dir, 'secrets', `${alg}.pem`), await jose.exportPKCS8(privateKey), { mode: 0o600 });
  }
});
afterEach(() => tmp.cleanup());

function config(exchange: string): string {
  return `upstream: { host: db.internal, database: app, user: pgwarden }
auth:
  issuer: pgwarden-dev
  audience: [pgwarden, pgwarden-b]
  algorithms: [HS256]
  secretFile: ./secrets/jwt-secret
policyFile: ./policy.yaml
exchange:
${exchange}`;
}

function load(text: string): { ok: true; config: Config } | { ok: false; issues: ConfigIssue[] } {
  const file = join(dir, 'pgwarden.yaml');
  writeFileSync(file, text);
  const r = loadConfig(file, { env: {} });
  return r.ok ? { ok: true, config: r.config } : r;
}

function issues(text: string): string[] {
  const r = load(text);
  if (r.ok) throw new Error('expected issues');
  return r.issues.map((i) => `${i.path}: ${i.message}`);
}

describe('exchange', () => {
  it('loads with its defaults: loopback HTTP, the first auth audience, 16 kB bodies, 60 requests a minute', () => {
    const r = load(
      config(`  issuer: pgwarden-issued
  port: 0
  signingKeyFile: ./secrets/ES256.pem
  idp: { issuer: https://idp, audience: pgwarden, algorithms: [RS256], jwksUrl: https://idp/jwks }
`),
    );
    if (!r.ok) throw new Error(formatConfigIssues(r.issues));
    expect(r.config.exchange).toEqual({
      issuer: 'pgwarden-issued',
      audience: 'pgwarden',
      listen: { host: '127.0.0.1', port: 0, tls: undefined },
      signingKeyFile: join(dir, 'secrets', 'ES256.pem'),
      peerJwksUrls: [],
      idp: {
        issuer: 'https://idp',
        audience: 'pgwarden',
        algorithms: ['RS256'],
        jwksUrl: 'https://idp/jwks',
        publicKeyFile: undefined,
      },
      maxBodyBytes: 16 * 1024,
      requestsPerMinute: 60,
      requestTimeout: 10_000,
    });
    expect(load(config('  issuer: x\n  peerJwksUrls: [https://a/.well-known/jwks.json]\n'))).toMatchObject({
      ok: true,
      config: { exchange: { listen: undefined, signingKeyFile: undefined } },
    });
    expect(load(config('  issuer: x\n  port: 0\n  signingKeyFile: ./secrets/EdDSA.pem\n')).ok).toBe(true);
  });

  it('refuses plain HTTP off loopback, a shared issuer, a foreign audience, a key that cannot issue, and trusting nothing', () => {
    const found = [
      ...issues(config('  issuer: x\n  host: 0.0.0.0\n  port: 8443\n  signingKeyFile: ./secrets/ES256.pem\n')),
      ...issues(config('  issuer: pgwarden-dev\n  audience: other\n  port: 0\n')),
      ...issues(config('  issuer: x\n  port: 0\n  signingKeyFile: ./secrets/RS256.pem\n')),
      ...issues(config('  issuer: x\n')),
      ...issues(config('  issuer: x\n  peerJwksUrls: [http://peer.example/jwks.json]\n')),
      ...issues(config('  port: 0\n  signingKeyFile: ./secrets/ES256.pem\n')),
    ].join('\n');
    expect(found).toContain('exchange.host: is not a loopback address');
    expect(found).toContain('exchange.issuer: must differ from every auth.issuer');
    expect(found).toContain('exchange.audience: must be one of auth.audience');
    expect(found).toContain('exchange.signingKeyFile: is required when exchange.port is given');
    expect(found).toContain('exchange.signingKeyFile: holds RSA');
    expect(found).toContain('exchange: trusts no key');
    expect(found).toContain('exchange.peerJwksUrls: http://peer.example/jwks.json: must use https');
    expect(found).toContain('exchange.issuer: is required');
  });

  it('pins the IdP to one asymmetric key source', async () => {
    const key = await generateKeyFiles(dir, 'ES256');
    const found = [
      ...issues(
        config(
          '  issuer: x\n  port: 0\n  signingKeyFile: ./secrets/ES256.pem\n  idp: { issuer: x, audience: a, algorithms: [HS256], jwksUrl: https://idp/jwks }\n',
        ),
      ),
      ...issues(
        config(
          `  issuer: x\n  port: 0\n  signingKeyFile: ./secrets/ES256.pem\n  idp: { issuer: i, audience: a, algorithms: [RS256], publicKeyFile: ${key.publicPemPath} }\n`,
        ),
      ),
      ...issues(
        config(
          '  issuer: x\n  port: 0\n  signingKeyFile: ./secrets/ES256.pem\n  idp: { issuer: i, audience: a, algorithms: [ES256] }\n',
        ),
      ),
      ...issues(
        config(
          '  issuer: x\n  port: 0\n  signingKeyFile: ./secrets/ES256.pem\n  idp: { issuer: i, audience: [a, b], approverAudience: b, algorithms: [ES256], jwksUrl: https://idp/jwks }\n',
        ),
      ),
    ].join('\n');
    expect(found).toContain('exchange.idp.algorithms: "HS256" is not an asymmetric JWS algorithm');
    expect(found).toContain('exchange.idp.issuer: must differ from exchange.issuer');
    expect(found).toContain('exchange.idp.algorithms: RS256 cannot be used with the key in exchange.idp.publicKeyFile');
    expect(found).toContain('exchange.idp: set exactly one of jwksUrl and publicKeyFile');
    // A token handed to an agent for exchanges must never be an approver's credential.
    expect(found).toContain('exchange.idp.approverAudience: must differ from every exchange.idp.audience');
  });
});
