// Summaries of the end-to-end runs, the Markdown tables of bench/RESULTS.md and the bench/tps.svg chart (no dependency).
import { latencyStats, type LatencyStats, type Mode } from './pgbench.ts';
import { median } from './timing.ts';

/** `relay` is bench/node-relay.ts: a bare Node.js TCP relay, the floor any Node.js proxy starts from. */
export type Target = 'direct' | 'pgbouncer' | 'relay' | 'pgwarden';

export interface RunRecord {
  round: number;
  mode: Mode;
  clients: number;
  target: Target;
  ok: boolean;
  error?: string;
  tps: number;
  transactions: number;
  latenciesUs: Float32Array;
  wallSeconds: number;
  /** CPU seconds (utime+stime) the proxy process used during the run, when the target is a proxy. */
  proxyCpuSeconds?: number;
  proxyRssKb?: number;
}

export interface CellSummary {
  mode: Mode;
  clients: number;
  target: Target;
  rounds: number;
  failed: number;
  firstError?: string;
  tpsMedian: number;
  tpsMin: number;
  tpsMax: number;
  latency: LatencyStats;
  /** Cores the proxy used on average during the runs (CPU seconds / wall seconds). */
  proxyCores?: number;
  proxyCpuUsPerTxn?: number;
  proxyRssMaxKb?: number;
}

export interface RatioSummary {
  median: number;
  min: number;
  max: number;
  n: number;
}

const key = (mode: Mode, clients: number) => `${mode}/${clients}`;

export function summarize(
  records: RunRecord[],
  modes: Mode[],
  clients: number[],
  targets: Target[],
): Map<string, Map<Target, CellSummary>> {
  const out = new Map<string, Map<Target, CellSummary>>();
  for (const mode of modes) {
    for (const c of clients) {
      const byTarget = new Map<Target, CellSummary>();
      for (const t of targets) {
        const rs = records.filter((r) => r.mode === mode && r.clients === c && r.target === t);
        const ok = rs.filter((r) => r.ok);
        const tps = ok.map((r) => r.tps);
        const cpu = ok.filter((r) => r.proxyCpuSeconds !== undefined && Number.isFinite(r.proxyCpuSeconds));
        const cpuSum = cpu.reduce((a, r) => a + (r.proxyCpuSeconds ?? 0), 0);
        const wallSum = cpu.reduce((a, r) => a + r.wallSeconds, 0);
        const txnSum = cpu.reduce((a, r) => a + r.transactions, 0);
        const firstError = rs.find((r) => !r.ok)?.error;
        byTarget.set(t, {
          mode,
          clients: c,
          target: t,
          rounds: rs.length,
          failed: rs.length - ok.length,
          ...(firstError !== undefined ? { firstError } : {}),
          tpsMedian: median(tps),
          tpsMin: tps.length ? Math.min(...tps) : NaN,
          tpsMax: tps.length ? Math.max(...tps) : NaN,
          latency: latencyStats(ok.map((r) => r.latenciesUs)),
          ...(cpu.length ? { proxyCores: cpuSum / wallSum, proxyCpuUsPerTxn: (cpuSum * 1e6) / txnSum } : {}),
          ...(ok.some((r) => r.proxyRssKb !== undefined)
            ? { proxyRssMaxKb: Math.max(...ok.map((r) => r.proxyRssKb ?? 0)) }
            : {}),
        });
      }
      out.set(key(mode, c), byTarget);
    }
  }
  return out;
}

/** Per-round ratios a/b of TPS for one cell (rounds where both succeeded). */
export function ratio(records: RunRecord[], mode: Mode, clients: number, a: Target, b: Target): RatioSummary {
  const rounds = [...new Set(records.map((r) => r.round))];
  const xs: number[] = [];
  for (const round of rounds) {
    const ra = records.find(
      (r) => r.round === round && r.mode === mode && r.clients === clients && r.target === a && r.ok,
    );
    const rb = records.find(
      (r) => r.round === round && r.mode === mode && r.clients === clients && r.target === b && r.ok,
    );
    if (ra && rb) xs.push(ra.tps / rb.tps);
  }
  return {
    median: median(xs),
    min: xs.length ? Math.min(...xs) : NaN,
    max: xs.length ? Math.max(...xs) : NaN,
    n: xs.length,
  };
}

export const fmtTps = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–');
export const fmtMs = (x: number) => (Number.isFinite(x) ? (x >= 10 ? x.toFixed(1) : x.toFixed(3)) : '–');
export const fmtRatio = (r: RatioSummary) =>
  Number.isFinite(r.median) ? `${r.median.toFixed(2)} (${r.min.toFixed(2)}–${r.max.toFixed(2)})` : '–';

export function tpsTable(
  sum: Map<string, Map<Target, CellSummary>>,
  records: RunRecord[],
  modes: Mode[],
  clients: number[],
  targets: Target[],
): string {
  // Ratios, each only when both of its targets ran: pgwarden against PgBouncer (the issue's target), the bare Node.js
  // relay against PgBouncer (what the platform alone allows), pgwarden against that relay (what pgwarden's own work
  // costs), and pgwarden against direct.
  const pairs = (
    [
      ['pgwarden', 'pgbouncer', 'pgwarden / PgBouncer'],
      ['relay', 'pgbouncer', 'relay / PgBouncer'],
      ['pgwarden', 'relay', 'pgwarden / relay'],
      ['pgwarden', 'direct', 'pgwarden / direct'],
    ] as const
  ).filter(([a, b]) => targets.includes(a) && targets.includes(b));
  const head = ['mode', 'clients', ...targets.map((t) => `${t} TPS`), ...pairs.map((p) => p[2])];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`];
  for (const mode of modes) {
    for (const c of clients) {
      const cell = sum.get(key(mode, c));
      const tcols = targets.map((t) => {
        const s = cell?.get(t);
        if (!s || s.rounds === 0) return '–';
        if (s.failed === s.rounds) return `failed`;
        const spread = s.rounds - s.failed > 1 ? ` (${fmtTps(s.tpsMin)}–${fmtTps(s.tpsMax)})` : '';
        return `${fmtTps(s.tpsMedian)}${spread}${s.failed ? ` ⚠${s.failed} failed` : ''}`;
      });
      const rcols = pairs.map(([a, b]) => fmtRatio(ratio(records, mode, c, a, b)));
      lines.push(`| ${mode} | ${c} | ${[...tcols, ...rcols].join(' | ')} |`);
    }
  }
  return lines.join('\n');
}

export function latencyTable(
  sum: Map<string, Map<Target, CellSummary>>,
  modes: Mode[],
  clients: number[],
  targets: Target[],
): string {
  const head = ['mode', 'clients', ...targets.map((t) => `${t} avg / p50 / p99 (ms)`)];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`];
  for (const mode of modes) {
    for (const c of clients) {
      const cell = sum.get(key(mode, c));
      const cols = targets.map((t) => {
        const l = cell?.get(t)?.latency;
        return l && l.n > 0 ? `${fmtMs(l.avgMs)} / ${fmtMs(l.p50Ms)} / ${fmtMs(l.p99Ms)}` : '–';
      });
      lines.push(`| ${mode} | ${c} | ${cols.join(' | ')} |`);
    }
  }
  return lines.join('\n');
}

export function proxyCostTable(
  sum: Map<string, Map<Target, CellSummary>>,
  modes: Mode[],
  clients: number[],
  proxies: Target[],
): string {
  const head = [
    'mode',
    'clients',
    ...proxies.flatMap((p) => [`${p} cores`, `${p} CPU µs/txn`]),
    ...(proxies.includes('pgwarden') ? ['pgwarden max RSS'] : []),
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`];
  for (const mode of modes) {
    for (const c of clients) {
      const cell = sum.get(key(mode, c));
      const cols = proxies.flatMap((p) => {
        const s = cell?.get(p);
        return [
          s?.proxyCores !== undefined ? s.proxyCores.toFixed(2) : '–',
          s?.proxyCpuUsPerTxn !== undefined ? s.proxyCpuUsPerTxn.toFixed(1) : '–',
        ];
      });
      const rss = cell?.get('pgwarden')?.proxyRssMaxKb;
      if (proxies.includes('pgwarden')) cols.push(rss !== undefined ? `${(rss / 1024).toFixed(0)} MiB` : '–');
      lines.push(`| ${mode} | ${c} | ${cols.join(' | ')} |`);
    }
  }
  return lines.join('\n');
}

const COLORS: Record<Target, string> = {
  direct: '#4e79a7',
  pgbouncer: '#f28e2b',
  relay: '#bab0ac',
  pgwarden: '#59a14f',
};
const LABELS: Record<Target, string> = {
  direct: 'direct',
  pgbouncer: 'PgBouncer (session)',
  relay: 'bare Node.js relay',
  pgwarden: 'pgwarden',
};

/** Text escaped for SVG. */
export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A round axis step (1, 2, 2.5 or 5 × a power of ten) giving about `ticks` ticks up to `max`. */
export function niceStep(max: number, ticks: number): number {
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

/** Grouped bars: one group per mode × client count, one bar per target (median TPS), whiskers min–max over rounds. */
export function tpsSvg(
  sum: Map<string, Map<Target, CellSummary>>,
  modes: Mode[],
  clients: number[],
  targets: Target[],
  subtitle: string,
): string {
  const groups = modes.flatMap((m) => clients.map((c) => ({ mode: m, clients: c })));
  const W = Math.max(720, 80 + groups.length * (targets.length * 22 + 26));
  const H = 440;
  const left = 70;
  const right = 20;
  const top = 64;
  const bottom = 92;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  let maxTps = 0;
  for (const g of groups)
    for (const t of targets) maxTps = Math.max(maxTps, sum.get(key(g.mode, g.clients))?.get(t)?.tpsMax ?? 0);
  if (!Number.isFinite(maxTps) || maxTps <= 0) maxTps = 1;
  const step = niceStep(maxTps, 6);
  const yMax = Math.ceil((maxTps * 1.05) / step) * step;
  const y = (v: number) => top + plotH - (v / yMax) * plotH;
  const groupW = plotW / groups.length;
  const barW = Math.min(22, (groupW - 14) / targets.length);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(
    `<text x="${left}" y="24" font-size="16" font-weight="bold">pgbench -S throughput: ${esc(targets.map((t) => LABELS[t]).join(', '))}</text>`,
  );
  out.push(`<text x="${left}" y="44" fill="#555">${esc(subtitle)}</text>`);
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    out.push(`<line x1="${left}" x2="${W - right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e3e3e3"/>`);
    out.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#444">${fmtTps(v)}</text>`);
  }
  out.push(
    `<text transform="translate(16 ${top + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#444">transactions / s (median of rounds; whiskers min–max)</text>`,
  );
  groups.forEach((g, gi) => {
    const gx = left + gi * groupW + (groupW - barW * targets.length) / 2;
    targets.forEach((t, ti) => {
      const s = sum.get(key(g.mode, g.clients))?.get(t);
      const x = gx + ti * barW;
      if (!s || !Number.isFinite(s.tpsMedian)) {
        out.push(
          `<text x="${(x + barW / 2).toFixed(1)}" y="${(y(0) - 4).toFixed(1)}" text-anchor="middle" font-size="10" fill="#b00">×</text>`,
        );
        return;
      }
      out.push(
        `<rect x="${(x + 1).toFixed(1)}" y="${y(s.tpsMedian).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(y(0) - y(s.tpsMedian)).toFixed(1)}" fill="${COLORS[t]}"><title>${esc(`${LABELS[t]}, ${g.mode}, ${g.clients} clients: ${fmtTps(s.tpsMedian)} TPS (${fmtTps(s.tpsMin)}–${fmtTps(s.tpsMax)})`)}</title></rect>`,
      );
      if (s.tpsMax > s.tpsMin) {
        const cx = (x + barW / 2).toFixed(1);
        out.push(
          `<line x1="${cx}" x2="${cx}" y1="${y(s.tpsMax).toFixed(1)}" y2="${y(s.tpsMin).toFixed(1)}" stroke="#222" stroke-width="1"/>`,
        );
        out.push(
          `<line x1="${(x + barW / 2 - 3).toFixed(1)}" x2="${(x + barW / 2 + 3).toFixed(1)}" y1="${y(s.tpsMax).toFixed(1)}" y2="${y(s.tpsMax).toFixed(1)}" stroke="#222"/>`,
        );
        out.push(
          `<line x1="${(x + barW / 2 - 3).toFixed(1)}" x2="${(x + barW / 2 + 3).toFixed(1)}" y1="${y(s.tpsMin).toFixed(1)}" y2="${y(s.tpsMin).toFixed(1)}" stroke="#222"/>`,
        );
      }
    });
    const cx = left + gi * groupW + groupW / 2;
    out.push(`<text x="${cx.toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle">c=${g.clients}</text>`);
    if (gi % clients.length === 0) {
      const mx = left + gi * groupW + (groupW * clients.length) / 2;
      out.push(
        `<text x="${mx.toFixed(1)}" y="${top + plotH + 34}" text-anchor="middle" font-weight="bold">-M ${g.mode}</text>`,
      );
      if (gi > 0)
        out.push(
          `<line x1="${left + gi * groupW}" x2="${left + gi * groupW}" y1="${top}" y2="${top + plotH + 38}" stroke="#bbb" stroke-dasharray="3,3"/>`,
        );
    }
  });
  out.push(`<line x1="${left}" x2="${W - right}" y1="${y(0)}" y2="${y(0)}" stroke="#333"/>`);
  let lx = left;
  const ly = H - 22;
  for (const t of targets) {
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${COLORS[t]}"/>`);
    out.push(`<text x="${lx + 16}" y="${ly}">${esc(LABELS[t])}</text>`);
    lx += 30 + LABELS[t].length * 7;
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}
