// Cancel keys: the upstream pid with a secret of pgwarden's own, released with the session, and only an exact key forwards a cancel.
import { describe, expect, it } from 'vitest';
import { CancelRegistry } from '../../../proxy/session/cancel.ts';

describe('CancelRegistry', () => {
  it('reports the upstream pid and forwards a cancel only for the exact pid and secret it issued', () => {
    const reg = new CancelRegistry();
    let cancelled = 0;
    const key = reg.issue({ cancelUpstream: () => cancelled++ }, 4242);
    expect(key.processId).toBe(4242);
    expect(key.secretKey.length).toBe(4);
    const wrong = Buffer.from(key.secretKey);
    wrong[3] = (wrong[3]! + 1) & 0xff;
    expect(reg.cancel(4242, wrong)).toBe(false);
    expect(reg.cancel(4243, key.secretKey)).toBe(false);
    expect(reg.cancel(4242, key.secretKey.subarray(0, 3))).toBe(false);
    expect(reg.cancel(4242, Buffer.concat([key.secretKey, Buffer.alloc(28)]))).toBe(false);
    expect(cancelled).toBe(0);
    expect(reg.cancel(4242, key.secretKey)).toBe(true);
    expect(cancelled).toBe(1);
    reg.release(key);
    expect(reg.cancel(4242, key.secretKey)).toBe(false);
    expect(reg.size).toBe(0);
  });

  it('two sessions with the same upstream pid (two upstream servers) keep separate keys: each secret cancels only its own', () => {
    const reg = new CancelRegistry();
    const hits: string[] = [];
    const a = reg.issue({ cancelUpstream: () => hits.push('a') }, 777);
    const b = reg.issue({ cancelUpstream: () => hits.push('b') }, 777);
    expect(a.secretKey.equals(b.secretKey)).toBe(false);
    expect(reg.cancel(777, b.secretKey)).toBe(true);
    expect(hits).toEqual(['b']);
    reg.release(a);
    expect(reg.cancel(777, b.secretKey)).toBe(true);
    expect(reg.cancel(777, a.secretKey)).toBe(false);
    expect(hits).toEqual(['b', 'b']);
  });

  it("knowing another session's pid is not enough: its own secret with the other pid cancels nothing", () => {
    const reg = new CancelRegistry();
    const hits: string[] = [];
    const victim = reg.issue({ cancelUpstream: () => hits.push('victim') }, 1001);
    const attacker = reg.issue({ cancelUpstream: () => hits.push('attacker') }, 1002);
    expect(reg.cancel(victim.processId, attacker.secretKey)).toBe(false);
    expect(reg.cancel(attacker.processId, victim.secretKey)).toBe(false);
    expect(hits).toEqual([]);
  });

  it('issues distinct secrets, 32 random bits on a lone replica', () => {
    const reg = new CancelRegistry();
    const secrets = new Set<number>();
    const firstBytes = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const k = reg.issue({ cancelUpstream: () => {} }, 100 + (i % 3));
      secrets.add(k.secretKey.readUInt32BE(0));
      firstBytes.add(k.secretKey[0]!);
    }
    expect(secrets.size).toBe(1000);
    // No replica id in the first byte: it takes (nearly) all 256 values.
    expect(firstBytes.size).toBeGreaterThan(200);
  });

  it('refuses a pid that is not a positive int32', () => {
    const reg = new CancelRegistry();
    for (const pid of [0, -1, 2 ** 31, 1.5])
      expect(() => reg.issue({ cancelUpstream: () => {} }, pid)).toThrow(TypeError);
  });
});

describe('replica ids in cancel secrets', () => {
  it('in a cluster every secret carries the issuing replica id, and a key of an unknown replica goes nowhere', () => {
    const reg = new CancelRegistry(5, [{ id: 6, host: '127.0.0.1', port: 1 }]);
    for (let i = 0; i < 200; i++) {
      const k = reg.issue({ cancelUpstream: () => {} }, 999);
      expect(CancelRegistry.replicaOf(k.secretKey)).toBe(5);
      expect(CancelRegistry.replicaOf(k.secretKey.readInt32BE(0))).toBe(5);
      expect(k.processId).toBe(999);
    }
    // A key of replica 9 (not a configured peer) is neither matched locally nor forwarded.
    expect(reg.cancel(999, Buffer.from([9, 1, 2, 3]))).toBe(false);
    expect(reg.stats.forwarded).toBe(0);
  });

  it('refuses replica ids outside 0..127', () => {
    expect(() => new CancelRegistry(128)).toThrow(TypeError);
    expect(() => new CancelRegistry(-1)).toThrow(TypeError);
  });
});
