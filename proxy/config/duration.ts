// Durations and byte sizes in config values: "15m", "300s", "250ms", "1h", "2d", "1MB" → numbers, and back.

const DURATION_UNITS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
type DurationUnit = keyof typeof DURATION_UNITS;

// One number and one unit, no spaces: "15 mins" or "1h30m" are refused rather than guessed at.
const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/;

/**
 * Parse a duration into milliseconds: "250ms", "300s", "15m", "1h", "2d", or a bare number of seconds
 * (a number, or a numeric string as env vars give). Returns undefined for anything else, including negatives.
 */
export function parseDuration(v: unknown): number | undefined {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) return undefined;
    return checkedMillis(v * 1_000);
  }
  if (typeof v !== 'string') return undefined;
  const match = DURATION_RE.exec(v.trim());
  if (match === null) return undefined;
  const amount = Number(match[1]);
  const unit = (match[2] ?? 's') as DurationUnit;
  return checkedMillis(amount * DURATION_UNITS[unit]);
}

function checkedMillis(ms: number): number | undefined {
  const rounded = Math.round(ms);
  return Number.isSafeInteger(rounded) ? rounded : undefined;
}

/** Format milliseconds with the largest unit that divides them exactly ("15m", "90s", "250ms"); parseDuration reads it back. */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0) return `${ms}ms`;
  if (ms === 0) return '0s';
  const largestFirst: DurationUnit[] = ['d', 'h', 'm', 's'];
  for (const unit of largestFirst) {
    const size = DURATION_UNITS[unit];
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

// Binary multiples, as PostgreSQL reads memory settings ("1MB" = 1024 kB); kB/KB/KiB are all accepted.
const BYTE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1024,
  kib: 1024,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};
const BYTES_RE = /^(\d+(?:\.\d+)?)\s?([a-z]+)?$/i;

/** Parse a byte size: a non-negative integer, or "512kB", "1MB", "1MiB" (1024-based). Undefined when malformed. */
export function parseBytes(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const match = BYTES_RE.exec(v.trim());
  if (match === null) return undefined;
  const unitName = (match[2] ?? 'b').toLowerCase();
  const multiplier = BYTE_UNITS[unitName];
  if (multiplier === undefined) return undefined;
  const bytes = Number(match[1]) * multiplier;
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Format a byte count with the largest binary unit that divides it exactly ("1MB", "512kB", "1000B"). */
export function formatBytes(n: number): string {
  if (!Number.isSafeInteger(n) || n <= 0) return `${n}B`;
  if (n % 1024 ** 3 === 0) return `${n / 1024 ** 3}GB`;
  if (n % 1024 ** 2 === 0) return `${n / 1024 ** 2}MB`;
  if (n % 1024 === 0) return `${n / 1024}kB`;
  return `${n}B`;
}
