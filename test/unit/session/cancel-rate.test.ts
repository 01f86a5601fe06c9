// CancelRegistry's per-address limit: checked before the key, per address, and forwarded cancels held to the peers' own rate.
import { describe, expect, it } from 'vitest';
import { CancelRegistry, FORWARDED_BIT } from '../../../proxy/session/cancel.ts';

describe('CancelRegistry per-address limit', () => {
  it('drops cancels past the rate, the right key included, and counts them; other addresses are not affected', () => {
    let cancelled = 0;
    const limited: (string | undefined)[] = [];
    const reg = new CancelRegistry(0, [], { perAddressPerMinute: 3, onAddressLimited: (a) => limited.push(a) });
    const key = reg.issue({ cancelUpstream: () => cancelled++ }, 1234);
    const wrong = Buffer.from([0, 0, 0, 0]);
    for (let i = 0; i < 3; i++) expect(reg.cancel(key.processId, wrong, '10.0.0.1')).toBe(false);
    expect(reg.cancel(key.processId, key.secretKey, '10.0.0.1')).toBe(false);
    expect(cancelled).toBe(0);
    expect(reg.stats.addressLimited).toBe(1);
    expect(limited).toEqual(['10.0.0.1']);
    expect(reg.cancel(key.processId, key.secretKey, '10.0.0.2')).toBe(true);
    expect(cancelled).toBe(1);
  });

  it('a lone replica drops every cancel marked as forwarded (no peer sends it one): the mark buys a client no larger rate', () => {
    let cancelled = 0;
    const reg = new CancelRegistry(0, [], { perAddressPerMinute: 2 });
    const key = reg.issue({ cancelUpstream: () => cancelled++ }, 1234);
    for (let i = 0; i < 5; i++)
      expect(reg.cancel(key.processId | FORWARDED_BIT | 0, key.secretKey, '10.0.0.9')).toBe(false);
    expect(cancelled).toBe(0);
    expect(reg.cancel(key.processId, key.secretKey, '10.0.0.9')).toBe(true);
  });

  it('in a cluster, cancels marked as forwarded by a peer have their own, larger bucket', () => {
    let cancelled = 0;
    const reg = new CancelRegistry(1, [{ id: 2, host: 'b', port: 1 }], {
      perAddressPerMinute: 2,
      forwardPerSecond: 50,
      forwardBurst: 100,
    });
    const key = reg.issue({ cancelUpstream: () => cancelled++ }, 1234);
    const wrong = Buffer.from([0, 0, 0, 0]);
    for (let i = 0; i < 2; i++) reg.cancel(key.processId, wrong, '10.0.0.9');
    expect(reg.cancel(key.processId, key.secretKey, '10.0.0.9')).toBe(false);
    // The same address as a peer forwarding (marked): within the peer rate.
    for (let i = 0; i < 50; i++)
      expect(reg.cancel(key.processId | FORWARDED_BIT | 0, key.secretKey, '10.0.0.9')).toBe(true);
    expect(cancelled).toBe(50);
    expect(reg.stats.addressLimited).toBe(1);
  });

  it('without a rate (0 or absent) nothing is limited', () => {
    const reg = new CancelRegistry(0, []);
    const key = reg.issue({ cancelUpstream: () => {} }, 1234);
    for (let i = 0; i < 500; i++) reg.cancel(key.processId, key.secretKey, '10.0.0.1');
    expect(reg.stats.addressLimited).toBe(0);
  });
});
