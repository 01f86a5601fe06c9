// Cancel keys: unguessable, released with the session, and only an exact key forwards a cancel.
import { describe, expect, it } from 'vitest';
import { CancelRegistry } from '../../../proxy/session/cancel.ts';

describe('CancelRegistry', () => {
  it('forwards a cancel only for the exact key it issued', () => {
    const reg = new CancelRegistry();
    let cancelled = 0;
    const key = reg.issue({ cancelUpstream: () => cancelled++ });
    expect(key.processId).toBeGreaterThan(0);
    expect(key.secretKey.length).toBe(4);
    const wrong = Buffer.from(key.secretKey);
    wrong[0] = (wrong[0]! + 1) & 0xff;
    expect(reg.cancel(key.processId, wrong)).toBe(false);
    expect(reg.cancel(key.processId + 1, key.secretKey)).toBe(false);
    expect(reg.cancel(key.processId, key.secretKey.subarray(0, 3))).toBe(false);
    expect(cancelled).toBe(0);
    expect(reg.cancel(key.processId, key.secretKey)).toBe(true);
    expect(cancelled).toBe(1);
    reg.release(key.processId);
    expect(reg.cancel(key.processId, key.secretKey)).toBe(false);
    expect(reg.size).toBe(0);
  });

  it('issues distinct keys', () => {
    const reg = new CancelRegistry();
    const ids = new Set<number>();
    for (let i = 0; i < 1000; i++) ids.add(reg.issue({ cancelUpstream: () => {} }).processId);
    expect(ids.size).toBe(1000);
  });
});

describe('replica ids in cancel keys', () => {
  it('every key carries the issuing replica id, and a key of an unknown replica goes nowhere', () => {
    const reg = new CancelRegistry(5, [{ id: 6, host: '127.0.0.1', port: 1 }]);
    for (let i = 0; i < 200; i++) {
      const k = reg.issue({ cancelUpstream: () => {} });
      expect(CancelRegistry.replicaOf(k.processId)).toBe(5);
      expect(k.processId).toBeGreaterThan(0);
      expect(k.processId).toBeLessThanOrEqual(0x7fffffff);
    }
    // A key of replica 9 (not a configured peer) is neither matched locally nor forwarded.
    expect(reg.cancel((9 << 24) | 1234, Buffer.alloc(4))).toBe(false);
  });

  it('refuses replica ids outside 0..127', () => {
    expect(() => new CancelRegistry(128)).toThrow(TypeError);
    expect(() => new CancelRegistry(-1)).toThrow(TypeError);
  });
});
