// Login through the real proxy with asymmetric keys: RS256 and ES256 key files, and a JWKS served on loopback with rotation.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import type * as jose from 'jose';
import { generateKeyFiles, makeTempDir, signToken, validClaims } from '../helpers/keys.ts';
import { pgError, startTestProxy } from '../helpers/proxy.ts';

const nowSec = () => Math.floor(Date.now() / 1000);
const tmp = makeTempDir();
afterAll(() => tmp.cleanup());

async function whoami(port: number, token: string): Promise<string> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'alice', database: 'app', password: token });
  await c.connect();
  try {
    return (await c.query(`SELECT current_setting('pgwarden.sub') AS s`)).rows[0].s;
  } finally {
    await c.end();
  }
}

describe.each(['RS256', 'ES256'])('%s key file', (alg) => {
  it('accepts tokens signed by the private key and refuses tokens signed by another', async () => {
    const key = await generateKeyFiles(tmp.dir, alg);
    const other = await generateKeyFiles(tmp.dir, alg);
    const tp = await startTestProxy({
      auth: { algorithms: [alg], secretFile: undefined, publicKeyFile: key.publicPemPath },
    });
    try {
      const good = await signToken(key.privateKey, validClaims(nowSec(), { sub: `${alg}-user` }), {
        alg,
        kid: key.kid,
      });
      expect(await whoami(tp.proxy.port, good)).toBe(`${alg}-user`);
      const forged = await signToken(other.privateKey, validClaims(nowSec()), { alg, kid: key.kid });
      const err = await pgError(() => whoami(tp.proxy.port, forged));
      expect(err.code).toBe('28P01');
      // An HS256 token "signed" with the public key bytes (algorithm confusion) is refused: HS256 is not pinned.
      const { readFileSync } = await import('node:fs');
      const confused = await signToken(new Uint8Array(readFileSync(key.publicPemPath)), validClaims(nowSec()), {
        alg: 'HS256',
      });
      expect((await pgError(() => whoami(tp.proxy.port, confused))).code).toBe('28P01');
    } finally {
      await tp.close();
    }
  });
});

describe('JWKS on loopback', () => {
  let server: http.Server;
  let keys: jose.JWK[] = [];
  let fetches = 0;
  let url = '';
  beforeAll(async () => {
    server = http.createServer((_req, res) => {
      fetches++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const addr = server.address();
    url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/jwks.json`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  it('picks up a rotated key: a new kid triggers a refetch', async () => {
    const k1 = await generateKeyFiles(tmp.dir, 'ES256', 'k1');
    const k2 = await generateKeyFiles(tmp.dir, 'ES256', 'k2');
    keys = [k1.publicJwk];
    const tp = await startTestProxy({
      auth: { algorithms: ['ES256'], secretFile: undefined, jwksUrl: url, jwksCooldown: 0 },
    });
    try {
      expect(
        await whoami(
          tp.proxy.port,
          await signToken(k1.privateKey, validClaims(nowSec(), { sub: 'one' }), { alg: 'ES256', kid: 'k1' }),
        ),
      ).toBe('one');
      const before = fetches;
      keys = [k1.publicJwk, k2.publicJwk];
      expect(
        await whoami(
          tp.proxy.port,
          await signToken(k2.privateKey, validClaims(nowSec(), { sub: 'two' }), { alg: 'ES256', kid: 'k2' }),
        ),
      ).toBe('two');
      expect(fetches).toBeGreaterThan(before);
      const unknown = await generateKeyFiles(tmp.dir, 'ES256', 'k3');
      const k3token = await signToken(unknown.privateKey, validClaims(nowSec()), { alg: 'ES256', kid: 'k3' });
      const err = await pgError(() => whoami(tp.proxy.port, k3token));
      expect(err.code).toBe('28P01');
    } finally {
      await tp.close();
    }
  });
});
