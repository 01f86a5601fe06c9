// bindRefusal: the Bind-time check of a parameter channel (pg_notify's), in text and binary format.
import { describe, expect, it } from 'vitest';
import { bindRefusal } from '../../../proxy/session/bind-checks.ts';
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
      expect(bindRefusal(checks, bind(Buffer.from('jobs_1'), format), [0, 0])).toBeUndefined();
      expect(bindRefusal(checks, bind(Buffer.from('done'), format), [25, 25])).toBeUndefined();
    }
    expect(bindRefusal(undefined, bind(Buffer.from('anything')), [])).toBeUndefined();
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
    const e = bindRefusal(checks, b, types);
    expect(e?.sqlstate).toBe('42501');
    expect(e?.message).toMatch(/permission denied by pgwarden/);
  });
});
