// The upstream connection cap: derived from the server's slots, the configured value when lower, sessions stopping short of pgwarden's own headroom.
import { describe, expect, it } from 'vitest';
import { chooseCap, OWN_HEADROOM, UpstreamCap, type ServerSlots } from '../../../proxy/upstream/cap.ts';

const slots = (s: Partial<ServerSlots> = {}): ServerSlots => ({
  maxConnections: 100,
  superuserReserved: 3,
  reserved: 0,
  inUse: 7,
  roleConnLimit: -1,
  roleInUse: 0,
  superuser: false,
  ...s,
});

describe('chooseCap', () => {
  it('max_connections − reserved − in use − a tenth (at least 3)', () => {
    expect(chooseCap(slots(), 0)).toMatchObject({ max: 100 - 3 - 7 - 10, derived: 80 });
    expect(chooseCap(slots({ maxConnections: 20, inUse: 0 }), 0).max).toBe(20 - 3 - 3);
    // PostgreSQL 16's reserved_connections are not pgwarden's either.
    expect(chooseCap(slots({ reserved: 5 }), 0).max).toBe(100 - 3 - 5 - 7 - 10);
  });

  it('the configured value when lower, never more than the derived one', () => {
    expect(chooseCap(slots(), 20).max).toBe(20);
    expect(chooseCap(slots(), 500).max).toBe(80);
  });

  it("the role's CONNECTION LIMIT when tighter", () => {
    const c = chooseCap(slots({ roleConnLimit: 30, roleInUse: 4 }), 0);
    expect(c.max).toBe(26);
    expect(c.reason).toContain('CONNECTION LIMIT 30');
  });

  it('at least 1 when the server is already full', () => {
    expect(chooseCap(slots({ inUse: 97 }), 0).max).toBe(1);
  });
});

describe('UpstreamCap', () => {
  it('admits sessions until only the headroom is left, then refuses with 53300 naming the limit', () => {
    const cap = new UpstreamCap(OWN_HEADROOM + 2);
    expect(cap.admitSession()).toBeUndefined();
    expect(cap.admitSession()).toBeUndefined();
    const err = cap.admitSession();
    expect(err?.sqlstate).toBe('53300');
    expect(err?.message).toBe(`too many upstream connections (limits.maxUpstreamConnections = ${OWN_HEADROOM + 2})`);
    cap.releaseSession();
    expect(cap.admitSession()).toBeUndefined();
  });

  it('own connections use the headroom, never more than the cap, and count against sessions', () => {
    const cap = new UpstreamCap(OWN_HEADROOM + 1);
    const releases = Array.from({ length: OWN_HEADROOM + 1 }, () => cap.acquireOwn());
    expect(() => cap.acquireOwn()).toThrow(/limits.maxUpstreamConnections/);
    expect(cap.admitSession()?.sqlstate).toBe('53300');
    for (const r of releases) {
      r();
      r(); // idempotent
    }
    expect(cap.own).toBe(0);
    expect(cap.admitSession()).toBeUndefined();
  });
});
