// parseDuration / formatDuration and byte sizes: accepted forms, refusals, and round trips.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatBytes, formatDuration, parseBytes, parseDuration } from '../../../proxy/config/duration.ts';

describe('parseDuration', () => {
  it.each([
    ['250ms', 250],
    ['300s', 300_000],
    ['15m', 900_000],
    ['1h', 3_600_000],
    ['2d', 172_800_000],
    ['1.5s', 1_500],
    ['0', 0],
    ['0s', 0],
    ['300', 300_000],
    [' 10s ', 10_000],
  ])('reads %j as %d ms', (input, ms) => {
    expect(parseDuration(input)).toBe(ms);
  });

  it('reads a bare number as seconds', () => {
    expect(parseDuration(10)).toBe(10_000);
    expect(parseDuration(0.25)).toBe(250);
    expect(parseDuration(0)).toBe(0);
  });

  it.each(['15 mins', '15 m', '1h30m', '-5s', '5 s', '', 'ms', '10x', '1e3', 'Infinity', '0x10', '15M'])(
    'refuses %j',
    (input) => {
      expect(parseDuration(input)).toBeUndefined();
    },
  );

  it.each([-1, Number.NaN, Number.POSITIVE_INFINITY, null, undefined, true, {}, ['15m']])(
    'refuses non-duration value %j',
    (input) => {
      expect(parseDuration(input)).toBeUndefined();
    },
  );
});

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [250, '250ms'],
    [1_500, '1500ms'],
    [30_000, '30s'],
    [90_000, '90s'],
    [900_000, '15m'],
    [3_600_000, '1h'],
    [172_800_000, '2d'],
  ])('formats %d as %j', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it('round-trips through parseDuration for every non-negative integer (seeded)', () => {
    const seed = 20_261_122;
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 40 }), (ms) => parseDuration(formatDuration(ms)) === ms),
      { seed, numRuns: 2_000 },
    );
  });
});

describe('parseBytes', () => {
  it.each([
    [1024, 1024],
    ['1024', 1024],
    ['512kB', 512 * 1024],
    ['512KB', 512 * 1024],
    ['1MB', 1024 * 1024],
    ['1MiB', 1024 * 1024],
    ['1 MB', 1024 * 1024],
    ['2GB', 2 * 1024 ** 3],
    ['100B', 100],
  ])('reads %j as %d bytes', (input, n) => {
    expect(parseBytes(input)).toBe(n);
  });

  it.each(['1 MBs', '1.5B', 'MB', '-1', '1TB', -1, 1.5, null])('refuses %j', (input) => {
    expect(parseBytes(input)).toBeUndefined();
  });

  it('formats with the largest exact unit and reads it back', () => {
    expect(formatBytes(1024 * 1024)).toBe('1MB');
    expect(formatBytes(512 * 1024)).toBe('512kB');
    expect(formatBytes(1000)).toBe('1000B');
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 40 }), (n) => parseBytes(formatBytes(n)) === n),
      { seed: 7, numRuns: 1_000 },
    );
  });
});
