// A revocation is never ignored for what it holds: identifiers of any length (up to a 64 KiB token's claims), empty or
// over-long reasons, rows naming several keys, 'infinity' expiry; the CLI revokes any claim a token can carry; a
// revocation file missing at startup refuses to start unless the operator chose otherwise.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MAX_TOKEN_LENGTH } from '../../../proxy/auth/jwt.ts';
import { settings } from '../../../proxy/config/settings.ts';
import {
  parseRevocationText,
  revoke,
  RevocationFileError,
  RevocationIndex,
  RevocationList,
} from '../../../proxy/revocation/file.ts';
import { MAX_REASON } from '../../../proxy/revocation/source.ts';
import { rowsToEntries } from '../../../proxy/revocation/table.ts';
import { revokeCommand, type RevokeLoadConfig } from '../../../proxy/cli/revoke.ts';
import { identityFactory } from '../../helpers/revocation.ts';

const id = identityFactory({ sub: 'alice', agent: 'bot-1', jti: 'jti-1' });

// Claims as long as a token can carry (each a bit under the 64 KiB token limit would allow for one of them).
const long = (c: string) => c.repeat(40_000);
const LONG_JTI = long('j');
const LONG_SUB = long('s');
const LONG_AGENT = long('a');

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-revoke-any-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('file entries', () => {
  it('long identifiers are matched exactly, empty and long reasons still revoke', () => {
    const text = JSON.stringify({
      revoked: [
        { jti: LONG_JTI, reason: '' },
        { sub: LONG_SUB, reason: 'r'.repeat(5_000) },
        { agent: LONG_AGENT, reason: '   ' },
      ],
    });
    const parsed = parseRevocationText(text);
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    const index = new RevocationIndex(parsed.entries);
    expect(index.match(id({ jti: LONG_JTI }))).toEqual({ reason: 'jti revoked' });
    const m = index.match(id({ jti: 'other', sub: LONG_SUB }));
    expect(m?.reason.length).toBe(MAX_REASON);
    expect(m?.reason.endsWith('…')).toBe(true);
    expect(index.match(id({ jti: 'other', agent: LONG_AGENT }))).toEqual({ reason: 'agent revoked' });
    // Exact match only: a prefix of a long value is not it.
    expect(index.match(id({ jti: LONG_JTI.slice(1), sub: 'bob', agent: 'x' }))).toBeUndefined();
    // A token exchanged from a revoked one (its parentJtis), or obtained through a revoked agent (its act chain).
    expect(index.match({ ...id({ jti: 'child', sub: 'bob', agent: 'x' }), parentJtis: ['p', LONG_JTI] })).toEqual({
      reason: 'jti revoked',
    });
    expect(index.match({ ...id({ jti: 'child', sub: 'bob', agent: 'x' }), act: ['x', LONG_AGENT] })).toEqual({
      reason: 'agent revoked',
    });
    expect(index.match({ ...id({ jti: 'child', sub: 'bob', agent: 'x' }), parentJtis: ['p'], act: ['x'] })).toBe(
      undefined,
    );
  });

  it('revoke() appends entries that used to be refused (long values, long reasons)', async () => {
    const file = path.join(dir, 'revoked.yaml');
    await revoke(file, { jti: LONG_JTI, reason: 'x'.repeat(3_000) });
    await revoke(file, { sub: LONG_SUB });
    const list = await RevocationList.open({ file, watch: false });
    try {
      expect(list.match(id({ jti: LONG_JTI }))).toBeDefined();
      expect(list.match(id({ jti: 'other', sub: LONG_SUB }))).toEqual({ reason: 'sub revoked' });
    } finally {
      list.close();
    }
  });
});

describe('table rows', () => {
  it('no row is skipped for what it holds', () => {
    const logs: string[] = [];
    const entries = rowsToEntries(
      [
        { jti: LONG_JTI, sub: null, agent: null, reason: '', expires_at: null },
        { jti: null, sub: LONG_SUB, agent: null, reason: 'y'.repeat(2_000), expires_at: null },
        { jti: null, sub: null, agent: LONG_AGENT, reason: null, expires_at: Number.POSITIVE_INFINITY },
        // A table made without the CHECK: a row naming two keys revokes by each.
        { jti: 'two-a', sub: 'two-b', agent: null, reason: 'both', expires_at: new Date('2100-01-01T00:00:00Z') },
        { jti: null, sub: null, agent: null, reason: 'nothing', expires_at: null },
      ],
      (_level, msg) => logs.push(msg),
    );
    const index = new RevocationIndex(entries);
    expect(index.match(id({ jti: LONG_JTI }))).toEqual({ reason: 'jti revoked' });
    expect(index.match(id({ jti: 'x', sub: LONG_SUB }))?.reason).toHaveLength(MAX_REASON);
    expect(index.match(id({ jti: 'x', agent: LONG_AGENT }))).toEqual({ reason: 'agent revoked' });
    expect(index.match(id({ jti: 'two-a', agent: 'x' }))).toEqual({ reason: 'both' });
    expect(index.match(id({ jti: 'x', sub: 'two-b', agent: 'x' }))).toEqual({ reason: 'both' });
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatch(/names none of jti, sub, agent/);
  });
});

describe('pgwarden revoke', () => {
  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    return {
      out,
      err,
      io: {
        out: (t: string) => void out.push(t),
        err: (t: string) => void err.push(t),
        now: () => Date.parse('2030-01-01T00:00:00Z'),
      },
    };
  };
  it('revokes a claim as long as a token can carry, read from a file (too long for argv)', async () => {
    const file = path.join(dir, 'revoked.yaml');
    const config: RevokeLoadConfig = () => ({ ok: true, config: { revocation: { file } } });
    // The longest jti a 64 KiB token could hold, with a character that is two bytes in UTF-8.
    const value = 'é'.repeat(MAX_TOKEN_LENGTH / 2);
    const valueFile = path.join(dir, 'jti.txt');
    writeFileSync(valueFile, `${value}\n`);
    const t = io();
    expect(await revokeCommand(['--config', 'x.yaml', '--jti-file', valueFile, '--reason', ''], config, t.io)).toBe(0);
    expect(t.err.join('')).toBe('');
    expect(t.out.join('')).toMatch(/\(32768 characters\)/);
    const parsed = parseRevocationText(readFileSync(file, 'utf8'));
    expect(parsed.ok && parsed.entries[0]?.jti).toBe(value);
    const list = await RevocationList.open({ file, watch: false });
    try {
      expect(list.match(id({ jti: value }))).toEqual({ reason: 'jti revoked' });
    } finally {
      list.close();
    }
    // Exactly one source of the value.
    expect(await revokeCommand(['--config', 'x.yaml', '--jti-file', valueFile, '--jti', 'a'], config, io().io)).toBe(2);
    expect(await revokeCommand(['--config', 'x.yaml', '--sub-file', path.join(dir, 'absent')], config, io().io)).toBe(
      1,
    );
  });
});

describe('a revocation file missing at startup', () => {
  it("refuses to start with ifMissing 'refuse' (the configuration's default), starts empty only when told to", async () => {
    const file = path.join(dir, 'nope', 'revoked.yaml');
    await expect(RevocationList.open({ file, watch: false, ifMissing: 'refuse' })).rejects.toBeInstanceOf(
      RevocationFileError,
    );
    await expect(RevocationList.open({ file, watch: false, ifMissing: 'refuse' })).rejects.toThrow(
      /does not exist.*revoked: \[\]/s,
    );
    const l = await RevocationList.open({ file, watch: false, ifMissing: 'empty' });
    expect(l.entries).toHaveLength(0);
    l.close();
    const setting = settings.find((s) => s.key === 'revocation.fileMissing');
    expect(setting).toMatchObject({ default: 'refuse' });
  });
});
