// The soak's report pieces: latency percentiles per traffic class, errors by SQLSTATE, the RSS-over-time SVG
// (hand-written like report.ts's tpsSvg; no dependency), and what pgwarden's audit trail and log say about the run.
import { readFileSync } from 'node:fs';
import type { ErrorCount, Recorder } from './soak-traffic.ts';
import { esc, niceStep } from './report.ts';
import { percentile } from './timing.ts';

export interface RssSample {
  /** Seconds since the traffic started (negative: before). */
  t: number;
  rssKb: number;
  /** Logged-in sessions (pgwarden_sessions_active from /metrics), when read at this sample. */
  sessions?: number;
}

export interface Marker {
  t: number;
  kind: 'reload' | 'revocation';
  label: string;
}

const f1 = (x: number) =>
  Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) : '–';

export function latencyTable(rec: Recorder): string {
  const rows = ['| traffic class | n | p50 ms | p95 ms | p99 ms | max ms |', '|---|---:|---:|---:|---:|---:|'];
  for (const [cls, xs] of [...rec.latencies.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    const s = Float64Array.from(xs).sort();
    const arr = Array.from(s);
    rows.push(
      `| ${cls} | ${arr.length.toLocaleString('en-US')} | ${f1(percentile(arr, 0.5))} | ${f1(percentile(arr, 0.95))} | ${f1(percentile(arr, 0.99))} | ${f1(arr[arr.length - 1] ?? NaN)} |`,
    );
  }
  return rows.join('\n');
}

export function errorTable(errors: ErrorCount[]): string {
  if (errors.length === 0) return '_none_';
  const rows = ['| traffic class | SQLSTATE / error | count | expected | example |', '|---|---|---:|---|---|'];
  const sorted = [...errors].sort(
    (a, b) => Number(a.expected) - Number(b.expected) || a.cls.localeCompare(b.cls) || b.count - a.count,
  );
  for (const e of sorted)
    rows.push(
      `| ${e.cls} | \`${e.code}\` | ${e.count.toLocaleString('en-US')} | ${e.expected ? 'yes' : '**no**'} | ${e.sample.replace(/\|/g, '\\|')} |`,
    );
  return rows.join('\n');
}

/** Per second: median and maximum latency of the legitimate statements that finished in it (ms). */
export interface LatencyPoint {
  t: number;
  p50: number;
  max: number;
}

export function latencyTimeline(timeline: Map<number, number[]>): LatencyPoint[] {
  return [...timeline.entries()]
    .sort(([a], [b]) => a - b)
    .map(([t, xs]) => {
      const s = [...xs].sort((a, b) => a - b);
      return { t: t + 0.5, p50: percentile(s, 0.5), max: s[s.length - 1] ?? NaN };
    });
}

/**
 * Two panels over the same time axis: pgwarden's RSS (MiB) with logged-in sessions on the right axis, and below it
 * the median and maximum latency of legitimate statements per second (log scale); reloads and revocations marked.
 */
export function rssSvg(
  samples: RssSample[],
  markers: Marker[],
  latency: LatencyPoint[],
  title: string,
  subtitle: string,
): string {
  const W = 900;
  const H = 560;
  const left = 70;
  const right = 70;
  const top = 64;
  const plotW = W - left - right;
  const rssH = 250;
  const gap = 40;
  const latTop = top + rssH + gap;
  const latH = 130;
  const axisY = latTop + latH;
  const pts = samples.filter((s) => Number.isFinite(s.rssKb));
  const tMin = Math.min(0, ...pts.map((s) => s.t));
  const tMax = Math.max(1, ...pts.map((s) => s.t), ...latency.map((p) => p.t));
  const rssMax = Math.max(1, ...pts.map((s) => s.rssKb / 1024));
  const yStep = niceStep(rssMax * 1.1, 5);
  const yMax = Math.ceil((rssMax * 1.1) / yStep) * yStep;
  const sess = pts.filter((s) => s.sessions !== undefined && Number.isFinite(s.sessions));
  const sMaxRaw = Math.max(1, ...sess.map((s) => s.sessions as number));
  const sStep = niceStep(sMaxRaw * 1.1, 5);
  const sMax = Math.ceil((sMaxRaw * 1.1) / sStep) * sStep;
  const x = (t: number) => left + ((t - tMin) / (tMax - tMin)) * plotW;
  const y = (mib: number) => top + rssH - (mib / yMax) * rssH;
  const ys = (n: number) => top + rssH - (n / sMax) * rssH;
  // Latency: log10 from 0.1 ms to the next power of ten above the largest maximum.
  const latMaxPow = Math.max(1, Math.ceil(Math.log10(Math.max(1, ...latency.map((p) => p.max)))));
  const yl = (msv: number) => axisY - ((Math.log10(Math.max(0.1, msv)) + 1) / (latMaxPow + 1)) * latH;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${left}" y="24" font-size="16" font-weight="bold">${esc(title)}</text>`);
  out.push(`<text x="${left}" y="44" fill="#555">${esc(subtitle)}</text>`);
  for (let v = 0; v <= yMax + 1e-9; v += yStep) {
    out.push(`<line x1="${left}" x2="${W - right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e3e3e3"/>`);
    out.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#444">${v}</text>`);
  }
  if (sess.length)
    for (let v = 0; v <= sMax + 1e-9; v += sStep)
      out.push(`<text x="${W - right + 6}" y="${(ys(v) + 4).toFixed(1)}" fill="#888">${v}</text>`);
  for (let p = -1; p <= latMaxPow; p++) {
    const v = 10 ** p;
    out.push(
      `<line x1="${left}" x2="${W - right}" y1="${yl(v).toFixed(1)}" y2="${yl(v).toFixed(1)}" stroke="#e3e3e3"/>`,
    );
    out.push(
      `<text x="${left - 6}" y="${(yl(v) + 4).toFixed(1)}" text-anchor="end" fill="#444">${v >= 1 ? v.toLocaleString('en-US') : v}</text>`,
    );
  }
  const tStep = niceStep(tMax - tMin, 10);
  for (let t = Math.ceil(tMin / tStep) * tStep; t <= tMax + 1e-9; t += tStep) {
    out.push(`<line x1="${x(t).toFixed(1)}" x2="${x(t).toFixed(1)}" y1="${axisY}" y2="${axisY + 4}" stroke="#333"/>`);
    out.push(`<text x="${x(t).toFixed(1)}" y="${axisY + 18}" text-anchor="middle" fill="#444">${t}</text>`);
  }
  out.push(
    `<text x="${left + plotW / 2}" y="${axisY + 36}" text-anchor="middle" fill="#444">seconds since the traffic started</text>`,
  );
  out.push(
    `<text transform="translate(18 ${top + rssH / 2}) rotate(-90)" text-anchor="middle" fill="#444">pgwarden RSS (MiB)</text>`,
  );
  out.push(
    `<text transform="translate(18 ${latTop + latH / 2}) rotate(-90)" text-anchor="middle" fill="#444">latency (ms)</text>`,
  );
  if (sess.length)
    out.push(
      `<text transform="translate(${W - 16} ${top + rssH / 2}) rotate(90)" text-anchor="middle" fill="#888">logged-in sessions</text>`,
    );
  for (const m of markers) {
    const color = m.kind === 'reload' ? '#4e79a7' : '#e15759';
    for (const [y1, y2] of [
      [top, top + rssH],
      [latTop, axisY],
    ] as const) {
      out.push(
        `<line x1="${x(m.t).toFixed(1)}" x2="${x(m.t).toFixed(1)}" y1="${y1}" y2="${y2}" stroke="${color}" stroke-dasharray="3,3" stroke-width="1"><title>${esc(`${m.t.toFixed(1)} s: ${m.label}`)}</title></line>`,
      );
    }
  }
  if (sess.length > 1)
    out.push(
      `<polyline fill="none" stroke="#999" stroke-width="1" points="${sess.map((s) => `${x(s.t).toFixed(1)},${ys(s.sessions as number).toFixed(1)}`).join(' ')}"/>`,
    );
  if (pts.length > 1)
    out.push(
      `<polyline fill="none" stroke="#59a14f" stroke-width="2" points="${pts.map((s) => `${x(s.t).toFixed(1)},${y(s.rssKb / 1024).toFixed(1)}`).join(' ')}"/>`,
    );
  if (latency.length > 1) {
    out.push(
      `<polyline fill="none" stroke="#f28e2b" stroke-width="1" points="${latency.map((p) => `${x(p.t).toFixed(1)},${yl(p.max).toFixed(1)}`).join(' ')}"/>`,
    );
    out.push(
      `<polyline fill="none" stroke="#333" stroke-width="1.5" points="${latency.map((p) => `${x(p.t).toFixed(1)},${yl(p.p50).toFixed(1)}`).join(' ')}"/>`,
    );
  }
  out.push(`<line x1="${left}" x2="${W - right}" y1="${y(0)}" y2="${y(0)}" stroke="#333"/>`);
  out.push(`<line x1="${left}" x2="${W - right}" y1="${axisY}" y2="${axisY}" stroke="#333"/>`);
  const ly = H - 12;
  const legend: [string, string, boolean][] = [
    ['#59a14f', 'pgwarden RSS', false],
    ['#999', 'logged-in sessions', false],
    ['#333', 'legitimate statements: median per second', false],
    ['#f28e2b', 'maximum', false],
    ['#4e79a7', 'policy reload', true],
    ['#e15759', 'revocation', true],
  ];
  let lx = 20;
  for (const [color, label, dashed] of legend) {
    out.push(
      `<line x1="${lx}" x2="${lx + 18}" y1="${ly - 4}" y2="${ly - 4}" stroke="${color}" stroke-width="2"${dashed ? ' stroke-dasharray="3,3"' : ''}/>`,
    );
    out.push(`<text x="${lx + 22}" y="${ly}">${esc(label)}</text>`);
    lx += 34 + label.length * 6.2;
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export interface AuditSummary {
  lines: number;
  /** Lines per `event`. */
  events: Map<string, number>;
  /** `statement` events by decision. */
  allow: number;
  deny: number;
  /** `policy_reload` events with reason `file`. */
  fileReloads: number;
  error?: string;
}

/** Counts the audit trail's events (one JSON object per line). */
export function readAudit(file: string): AuditSummary {
  const out: AuditSummary = { lines: 0, events: new Map(), allow: 0, deny: 0, fileReloads: 0 };
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return { ...out, error: err instanceof Error ? err.message : String(err) };
  }
  for (const line of text.split('\n')) {
    if (!line) continue;
    out.lines++;
    let e: { event?: string; decision?: string; reason?: string };
    try {
      e = JSON.parse(line) as typeof e;
    } catch {
      e = { event: 'unparsable' };
    }
    const ev = e.event ?? '?';
    out.events.set(ev, (out.events.get(ev) ?? 0) + 1);
    if (ev === 'statement' && e.decision === 'allow') out.allow++;
    if (ev === 'statement' && e.decision === 'deny') out.deny++;
    if (ev === 'policy_reload' && e.reason === 'file') out.fileReloads++;
  }
  return out;
}

/** How long each file-triggered policy reload took by pgwarden's own log ("policy reloaded", ms), sorted; [] without a log. */
export function reloadDurations(logFile: string): number[] {
  const out: number[] = [];
  let text = '';
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (!line.includes('"policy reloaded"')) continue;
    try {
      const e = JSON.parse(line) as { reason?: string; ms?: number };
      if (e.reason === 'file' && typeof e.ms === 'number') out.push(e.ms);
    } catch {
      // a line cut by a crash: skipped
    }
  }
  return out.sort((a, b) => a - b);
}

/**
 * The most of a sequential client's statements ([sent, answered] ms, in order, each answered before the next is
 * sent) that certainly happened within `windowMs` of each other: the first's send to the last's answer is shorter.
 */
export function mostWithin(statements: readonly (readonly [number, number])[], windowMs: number): number {
  let best = 0;
  for (let a = 0, b = 0; b < statements.length; b++) {
    while (
      a <= b &&
      (statements[b] as readonly [number, number])[1] - (statements[a] as readonly [number, number])[0] >= windowMs
    )
      a++;
    best = Math.max(best, b - a + 1);
  }
  return best;
}
