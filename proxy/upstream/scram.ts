// Client side of SCRAM-SHA-256 (RFC 5802/7677) for pgwarden's own upstream login; no channel binding.
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { ProxyError } from '../../lib/errors.ts';

export interface ScramState {
  clientNonce: string;
  clientFirstBare: string;
  password: string;
  serverSignature?: Buffer;
}

/** Starts an exchange: returns the client-first-message and the state to continue with. */
export function scramStart(password: string): { message: string; state: ScramState } {
  const clientNonce = randomBytes(18).toString('base64');
  // The user name is taken from the startup packet by Postgres; SCRAM's n= is sent empty.
  const clientFirstBare = `n=*,r=${clientNonce}`;
  return { message: `n,,${clientFirstBare}`, state: { clientNonce, clientFirstBare, password } };
}

function parseAttributes(msg: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of msg.split(',')) {
    const eq = part.indexOf('=');
    if (eq !== 1) continue;
    out.set(part.slice(0, 1), part.slice(2));
  }
  return out;
}

function hmac(key: Buffer, data: string | Buffer): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

/** Answers server-first-message with client-final-message (proof), remembering the expected server signature. */
export function scramContinue(state: ScramState, serverFirst: string): string {
  const attrs = parseAttributes(serverFirst);
  const nonce = attrs.get('r');
  const salt = attrs.get('s');
  const iterations = Number(attrs.get('i'));
  if (!nonce || !salt || !Number.isInteger(iterations) || iterations < 1 || iterations > 10_000_000) {
    throw new ProxyError('ERR_UPSTREAM', 'upstream sent an invalid SCRAM challenge');
  }
  // The server nonce must extend ours, or a man in the middle is replaying another exchange.
  if (!nonce.startsWith(state.clientNonce) || nonce.length === state.clientNonce.length) {
    throw new ProxyError('ERR_UPSTREAM', 'upstream SCRAM nonce does not extend the client nonce');
  }
  const saltedPassword = pbkdf2Sync(
    state.password.normalize('NFKC'),
    Buffer.from(salt, 'base64'),
    iterations,
    32,
    'sha256',
  );
  const clientKey = hmac(saltedPassword, 'Client Key');
  const storedKey = createHash('sha256').update(clientKey).digest();
  const clientFinalWithoutProof = `c=biws,r=${nonce}`;
  const authMessage = `${state.clientFirstBare},${serverFirst},${clientFinalWithoutProof}`;
  const clientSignature = hmac(storedKey, authMessage);
  const proof = Buffer.alloc(clientKey.length);
  for (let i = 0; i < clientKey.length; i++) proof[i] = (clientKey[i] ?? 0) ^ (clientSignature[i] ?? 0);
  const serverKey = hmac(saltedPassword, 'Server Key');
  state.serverSignature = hmac(serverKey, authMessage);
  return `${clientFinalWithoutProof},p=${proof.toString('base64')}`;
}

/** Checks server-final-message: the server must prove it knows the password too. */
export function scramFinish(state: ScramState, serverFinal: string): void {
  const attrs = parseAttributes(serverFinal);
  const v = attrs.get('v');
  const expected = state.serverSignature;
  if (!v || !expected) throw new ProxyError('ERR_UPSTREAM', 'upstream SCRAM exchange ended without a server signature');
  const got = Buffer.from(v, 'base64');
  if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
    throw new ProxyError('ERR_UPSTREAM', 'upstream SCRAM server signature does not match');
  }
}

/** md5 password hash as Postgres expects it: 'md5' + md5(md5(password + user) + salt). */
export function md5Password(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5')
    .update(password + user)
    .digest('hex');
  return (
    'md5' +
    createHash('md5')
      .update(Buffer.concat([Buffer.from(inner), salt]))
      .digest('hex')
  );
}
