// Upstream TLS with sslmode verify-full checks the configured host exactly as libpq does: IP addresses against
// iPAddress SANs (a certificate for 127.0.0.1 works, one for localhost does not), host names against dNSName SANs,
// the Common Name only as a fallback. Certificates are made here with openssl; the server speaks just enough of the
// PostgreSQL protocol (SSLRequest, then AuthenticationOk, BackendKeyData, ReadyForQuery).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UpstreamConfig } from '../../../proxy/config/types.ts';
import { connectUpstream, pgSslOptions, verifyPeerName } from '../../../proxy/upstream/connect.ts';

const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

let dir: string;
let caPem: string;
const leaves: Record<string, { key: string; cert: string }> = {};

function openssl(args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A leaf signed by the test CA, with the given subject and SANs (none when `san` is empty). */
function leaf(name: string, subject: string, san: string, ca = 'ca'): void {
  openssl([
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
    '-subj',
    subject,
  ]);
  const ext = `basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n${san ? `subjectAltName=${san}\n` : ''}`;
  writeFileSync(path.join(dir, `${name}.ext`), ext);
  openssl([
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.crt`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-days',
    '2',
    '-out',
    `${name}.crt`,
    '-extfile',
    `${name}.ext`,
  ]);
  leaves[name] = {
    key: readFileSync(path.join(dir, `${name}.key`), 'utf8'),
    cert: readFileSync(path.join(dir, `${name}.crt`), 'utf8'),
  };
}

function ca(name: string): void {
  openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

/** A server that answers SSLRequest with 'S', does TLS with `name`'s certificate, then logs anyone in. */
async function fakePostgres(name: string): Promise<{ port: number; close(): Promise<void> }> {
  const creds = leaves[name];
  if (!creds) throw new Error(`no certificate ${name}`);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((raw) => {
    sockets.add(raw);
    raw.on('error', () => {});
    raw.once('data', () => {
      raw.write('S');
      const secure = new tls.TLSSocket(raw, { isServer: true, key: creds.key, cert: creds.cert });
      secure.on('error', () => {});
      secure.once('data', () => {
        const authOk = Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0]);
        const key = Buffer.from([0x4b, 0, 0, 0, 12, 0, 0, 0, 7, 1, 2, 3, 4]);
        const ready = Buffer.from([0x5a, 0, 0, 0, 5, 0x49]);
        secure.write(Buffer.concat([authOk, key, ready]));
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address() as net.AddressInfo;
  return {
    port: addr.port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

async function login(certName: string, host: string): Promise<'ok' | string> {
  const server = await fakePostgres(certName);
  const cfg: UpstreamConfig = {
    host,
    port: server.port,
    database: 'app',
    user: 'pgwarden',
    password: undefined,
    sslmode: 'verify-full',
    sslRootCert: caPem,
    connectTimeout: 3_000,
  };
  try {
    const up = await connectUpstream(cfg, {});
    up.socket.destroy();
    return 'ok';
  } catch (err) {
    const cause = (err as { cause?: Error }).cause;
    return cause?.message ?? (err as Error).message;
  } finally {
    await server.close();
  }
}

describe.skipIf(!hasOpenssl)('verify-full against real certificates', () => {
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-tls-'));
    ca('ca');
    ca('other-ca');
    caPem = readFileSync(path.join(dir, 'ca.crt'), 'utf8');
    leaf('ip', '/CN=db-server', 'IP:127.0.0.1');
    leaf('localhost', '/CN=db-server', 'DNS:localhost');
    leaf('ip-in-cn', '/CN=127.0.0.1', '');
    leaf('other-ip', '/CN=127.0.0.1', 'IP:127.0.0.2');
    leaf('dns-spelled-ip', '/CN=db-server', 'DNS:127.0.0.1');
    leaf('untrusted', '/CN=db-server', 'IP:127.0.0.1,DNS:localhost', 'other-ca');
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a certificate for 127.0.0.1 (iPAddress SAN) is accepted for host 127.0.0.1', async () => {
    expect(await login('ip', '127.0.0.1')).toBe('ok');
  });

  it('a certificate for localhost from the trusted CA is refused for host 127.0.0.1', async () => {
    expect(await login('localhost', '127.0.0.1')).toMatch(/does not match host "127.0.0.1"/);
  });

  it('host names match dNSName SANs, not iPAddress ones', async () => {
    expect(await login('localhost', 'localhost')).toBe('ok');
    expect(await login('ip', 'localhost')).toMatch(/does not match host "localhost"/);
  });

  it("as libpq: the CN is checked when there is no SAN of the host's kind; a dNSName spelled as the address matches", async () => {
    expect(await login('ip-in-cn', '127.0.0.1')).toBe('ok');
    // An iPAddress SAN is present (for another address): the CN is not looked at.
    expect(await login('other-ip', '127.0.0.1')).toMatch(/does not match/);
    expect(await login('dns-spelled-ip', '127.0.0.1')).toBe('ok');
  });

  it('a certificate from another CA is refused whatever it names', async () => {
    expect(await login('untrusted', '127.0.0.1')).not.toBe('ok');
  });

  it('pg clients (catalog, readiness, revocations) get the same check', () => {
    const opts = pgSslOptions({ host: '127.0.0.1', sslmode: 'verify-full', sslRootCert: caPem });
    expect(opts).not.toBe(false);
    if (opts === false) return;
    expect(opts.rejectUnauthorized).toBe(true);
    const peer = (san: string) => ({ subject: { CN: 'x' }, subjectaltname: san }) as unknown as tls.PeerCertificate;
    // Node would pass 'localhost' as the name here: the configured host is what is checked.
    expect(opts.checkServerIdentity?.('localhost', peer('DNS:localhost'))).toBeInstanceOf(Error);
    expect(opts.checkServerIdentity?.('localhost', peer('IP Address:127.0.0.1'))).toBeUndefined();
    expect(pgSslOptions({ host: 'h', sslmode: 'disable', sslRootCert: undefined })).toBe(false);
  });
});

describe('verifyPeerName (libpq rules)', () => {
  const cert = (san: string | undefined, cn?: string | string[]) =>
    ({ subject: cn === undefined ? {} : { CN: cn }, subjectaltname: san }) as unknown as tls.PeerCertificate;
  it('IPv6 addresses in any spelling', () => {
    expect(verifyPeerName('::1', cert('IP Address:0:0:0:0:0:0:0:1'))).toBeUndefined();
    expect(verifyPeerName('0:0::1', cert('IP Address:0:0:0:0:0:0:0:1'))).toBeUndefined();
    expect(verifyPeerName('::2', cert('IP Address:0:0:0:0:0:0:0:1'))).toBeInstanceOf(Error);
    // An IPv4 SAN never matches an IPv6 host.
    expect(verifyPeerName('::ffff:127.0.0.1', cert('IP Address:127.0.0.1'))).toBeInstanceOf(Error);
  });
  it('wildcards cover exactly one leftmost label, case-insensitively, and never an IP address', () => {
    expect(verifyPeerName('db.Example.com', cert('DNS:*.example.com'))).toBeUndefined();
    expect(verifyPeerName('a.db.example.com', cert('DNS:*.example.com'))).toBeInstanceOf(Error);
    expect(verifyPeerName('example.com', cert('DNS:*.example.com'))).toBeInstanceOf(Error);
    expect(verifyPeerName('127.0.0.1', cert('DNS:*.0.0.1'))).toBeInstanceOf(Error);
  });
  it('the CN only when no dNSName SAN exists (host names)', () => {
    expect(verifyPeerName('db.example.com', cert(undefined, 'db.example.com'))).toBeUndefined();
    expect(verifyPeerName('db.example.com', cert('IP Address:10.0.0.1', 'db.example.com'))).toBeUndefined();
    expect(verifyPeerName('db.example.com', cert('DNS:other.example.com', 'db.example.com'))).toBeInstanceOf(Error);
  });
  it('quoted SAN values are read whole', () => {
    expect(verifyPeerName('a', cert('DNS:"a, DNS:b"'))).toBeInstanceOf(Error);
    expect(verifyPeerName('b', cert('DNS:"a, DNS:b"'))).toBeInstanceOf(Error);
    expect(verifyPeerName('', cert('DNS:'))).toBeInstanceOf(Error);
  });
});
