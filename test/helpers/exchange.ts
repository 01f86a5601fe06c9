// Token-exchange test fixtures: an issuing key file, ExchangeDeps with every dependency in memory, and a stand-in IdP's JWKS served on loopback.
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import * as jose from 'jose';
import { compilePolicy, parsePolicyText } from '../../policy/load.ts';
import type { ExchangeAuditEvent, ExchangeDeps } from '../../proxy/exchange/handler.ts';
import type { IssuingKeys } from '../../proxy/exchange/signing-keys.ts';
import type { IdpVerifier } from '../../proxy/exchange/subject.ts';
import { testAuthConfig } from './keys.ts';

/** Writes a fresh private key (PKCS#8 PEM, mode 0600) where pgwarden reads its issuing key. */
export async function writeSigningKey(file: string, alg: 'ES256' | 'EdDSA' = 'ES256'): Promise<void> {
  const { privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  writeFileSync(file, await jose.exportPKCS8(privateKey), { mode: 0o600 });
}

/**
 * exchangeToken's dependencies in memory: the policy text compiled, the given IdP and issuing key, events collected,
 * no approval store, every audit recordable; `over` replaces any of them.
 */
export function memoryExchangeDeps(
  setup: { policy: string; idp: IdpVerifier; signer: IssuingKeys; events: ExchangeAuditEvent[] },
  over: Partial<ExchangeDeps>,
): ExchangeDeps {
  const parsed = parsePolicyText(setup.policy, 'yaml', 't');
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
  const policy = compilePolicy(parsed.doc, 1, 'x');
  return {
    exchange: {
      issuer: 'pgwarden-issued',
      audience: 'pgwarden',
      listen: undefined,
      signingKeyFile: undefined,
      peerJwksUrls: [],
      idp: undefined,
      maxBodyBytes: 16384,
      requestsPerMinute: 60,
      requestTimeout: 10_000,
    },
    auth: testAuthConfig({}),
    policy: () => policy,
    idp: setup.idp,
    issued: {
      verify: async () => {
        throw new Error('not used');
      },
      close: () => {},
    },
    isRevoked: () => undefined,
    signer: setup.signer,
    issuedKeys: setup.signer.verificationKeys(),
    now: () => Date.now(),
    audit: (e) => setup.events.push(e),
    auditable: () => true,
    approvals: undefined,
    replica: 'test',
    ...over,
  };
}

/** A stand-in IdP publishing `keys()` as its JWKS on 127.0.0.1 (port 0); the caller closes the server. */
export async function serveJwks(keys: () => jose.JWK[]): Promise<{ server: http.Server; url: string }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: keys() }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  return { server, url: `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/jwks.json` };
}
