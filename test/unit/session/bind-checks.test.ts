// bindRefusal: the Bind-time checks of a parameter channel (pg_notify's) and of a backend pid (pg_terminate_backend's, pg_cancel_backend's), in text and binary format.
import { describe, expect, it } from 'vitest';
import { bindRefusal, type BindContext } from '../../../proxy/session/bind-checks.ts';
import type { BindCheck } from '../../../policy/types.ts';
import type { BindMessage } from '../../../proxy/wire/frontend.ts';

const checks: BindCheck[] = [
  {
    kind: 'notify_channel',
    param: 2,
    channels: [
      { name: 'jobs_', prefix: true },
      { name: 'done', prefix: false },
    ],
  },
];
/** The subject's sessions' backends: 4242 (this one) and 70000. */
const ctx: BindContext = { siblingBackends: () => new Set([4242, 70000]) };
const bind = (value: Buffer | null, format = 0): BindMessage => ({
  portal: '',
  statement: '',
  paramFormats: [format],
  params: [Buffer.from('payload'), value],
  resultFormats: [],
});

describe('bindRefusal', () => {
  it('accepts a channel the patterns allow, in text or binary format', () => {
    for (const format of [0, 1]) {
      expect(bindRefusal(checks, bind(Buffer.from('jobs_1'), format), [0, 0], ctx)).toBeUndefined();
      expect(bindRefusal(checks, bind(Buffer.from('done'), format), [25, 25], ctx)).toBeUndefined();
    }
    expect(bindRefusal(undefined, bind(Buffer.from('anything')), [], ctx)).toBeUndefined();
  });
  it.each<[string, BindMessage, number[]]>([
    ['another channel', bind(Buffer.from('other')), [0, 0]],
    ['a longer exact name', bind(Buffer.from('done2')), [0, 0]],
    ['NULL', bind(null), [0, 0]],
    ['not UTF-8', bind(Buffer.from([0x6a, 0xff])), [0, 0]],
    ['an allowed name after a byte order mark (part of the channel)', bind(Buffer.from('\uFEFFdone')), [0, 0]],
    ['a declared type that is not text (bpchar trims)', bind(Buffer.from('done')), [0, 1042]],
    ['a missing value', { ...bind(null), params: [Buffer.from('p')] }, [0, 0]],
  ])('refuses %s with 42501', (_n, b, types) => {
    const e = bindRefusal(checks, b, types, ctx);
    expect(e?.sqlstate).toBe('42501');
    expect(e?.message).toMatch(/permission denied by pgwarden/);
  });
});

describe('bindRefusal of a backend pid', () => {
  const pidCheck: BindCheck[] = [{ kind: 'sibling_backend', param: 1 }];
  const one = (value: Buffer | null, format = 0): BindMessage => ({
    portal: '',
    statement: '',
    paramFormats: [format],
    params: [value],
    resultFormats: [],
  });
  const int = (n: number, bytes: 2 | 4 | 8): Buffer => {
    const b = Buffer.alloc(bytes);
    if (bytes === 2) b.writeInt16BE(n);
    else if (bytes === 4) b.writeInt32BE(n);
    else b.writeBigInt64BE(BigInt(n));
    return b;
  };
  it.each<[string, BindMessage, number]>([
    ['a sibling in text', one(Buffer.from('70000')), 0],
    ['its own in text, with the whitespace and sign int4in skips', one(Buffer.from(' +4242\n')), 23],
    ['int4 binary', one(int(70000, 4), 1), 23],
    ["unspecified type, binary (read as the call's int4)", one(int(4242, 4), 1), 0],
    ['int2 binary', one(int(4242, 2), 1), 21],
    ['int8 binary', one(int(70000, 8), 1), 20],
    ['NULL (signals nothing)', one(null), 23],
  ])('accepts %s', (_n, b, type) => {
    expect(bindRefusal(pidCheck, b, [type], ctx)).toBeUndefined();
  });
  it.each<[string, BindMessage, number]>([
    ['another backend', one(Buffer.from('4243')), 0],
    ['a hexadecimal spelling (PostgreSQL 16 reads it; never misread here)', one(Buffer.from('0x1092')), 0],
    ['underscores', one(Buffer.from('70_000')), 0],
    ['a fraction', one(Buffer.from('4242.0')), 0],
    ['int8 beyond int4 whose low bits are a sibling', one(Buffer.from(String(2 ** 32 + 4242))), 20],
    ['a binary value of the wrong size', one(int(4242, 8), 1), 23],
    ['binary text type', one(Buffer.from('4242'), 1), 25],
    ['zero', one(Buffer.from('0')), 0],
    ['a missing value', { ...one(null), params: [] }, 0],
  ])('refuses %s with 42501', (_n, b, type) => {
    const e = bindRefusal(pidCheck, b, [type], ctx);
    expect(e?.sqlstate).toBe('42501');
    expect(e?.message).toMatch(/not the process id of a session of this token's subject/);
  });
});
