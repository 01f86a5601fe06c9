// Micro-benchmark timing: warm up, batch calls so one sample is long enough to time, take medians.

export interface Measurement {
  /** Median time of one call, in microseconds. */
  medianUs: number;
  meanUs: number;
  p10Us: number;
  p90Us: number;
  /** Calls timed (excluding warm-up). */
  calls: number;
  samples: number;
}

export interface MeasureOptions {
  /** Time spent measuring after warm-up (ms). */
  budgetMs: number;
  /** Warm-up time (ms); at least `minWarmupCalls` calls are made either way. */
  warmupMs?: number;
  minWarmupCalls?: number;
  /** A sample times a batch of calls lasting about this long (µs), so the timer's own cost stays small. */
  sampleUs?: number;
  minSamples?: number;
}

const now = () => process.hrtime.bigint();

/** Times `fn` with process.hrtime.bigint(); bounded by budgetMs (plus one batch and warm-up). */
export function measure(fn: () => unknown, opts: MeasureOptions): Measurement {
  const warmupEnd = now() + BigInt(Math.round((opts.warmupMs ?? opts.budgetMs / 4) * 1e6));
  let warm = 0;
  const minWarm = opts.minWarmupCalls ?? 20;
  let sink: unknown;
  while (warm < minWarm || now() < warmupEnd) {
    sink = fn();
    warm++;
    if (warm >= minWarm && warm > 100_000) break;
  }
  // Calibrate the batch size from one timed run of 8 calls.
  let t0 = now();
  for (let i = 0; i < 8; i++) sink = fn();
  const perCallNs = Number(now() - t0) / 8;
  const batch = Math.max(1, Math.round(((opts.sampleUs ?? 200) * 1000) / Math.max(perCallNs, 1)));
  const samples: number[] = [];
  const budgetNs = BigInt(Math.round(opts.budgetMs * 1e6));
  const start = now();
  const minSamples = opts.minSamples ?? 5;
  while (samples.length < minSamples || now() - start < budgetNs) {
    t0 = now();
    for (let i = 0; i < batch; i++) sink = fn();
    samples.push(Number(now() - t0) / batch / 1000);
    if (samples.length >= 200_000) break;
  }
  keep(sink);
  samples.sort((a, b) => a - b);
  const q = (p: number) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))] ?? NaN;
  return {
    medianUs: q(0.5),
    meanUs: samples.reduce((a, b) => a + b, 0) / samples.length,
    p10Us: q(0.1),
    p90Us: q(0.9),
    calls: samples.length * batch,
    samples: samples.length,
  };
}

let blackhole: unknown;
/** Keeps a result alive so the JIT cannot drop the work that produced it. */
export function keep(v: unknown): void {
  blackhole = v;
  if (blackhole === Symbol.for('never')) console.log('');
}

export function fmtUs(us: number): string {
  if (!Number.isFinite(us)) return '–';
  if (us >= 1000) return `${(us / 1000).toFixed(2)} ms`;
  if (us >= 100) return `${us.toFixed(0)} µs`;
  if (us >= 10) return `${us.toFixed(1)} µs`;
  return `${us.toFixed(2)} µs`;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] ?? NaN) : ((s[m - 1] ?? NaN) + (s[m] ?? NaN)) / 2;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[idx] ?? NaN;
}
