// The deployment assets under docker/ are real: they parse, reference files that exist, load as pgwarden config, and query only metrics pgwarden exports.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { loadModule, parseSync } from 'libpg-query';
import { formatConfigIssues, loadConfig } from '../../proxy/config/load.ts';
import { startMetricsServer } from '../../proxy/metrics.ts';
import { policyCheck } from '../../proxy/cli/policy.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DOCKER = path.join(ROOT, 'docker');
const read = (rel: string) => readFileSync(path.join(DOCKER, rel), 'utf8');
const yamlFile = (rel: string): any => parseYaml(read(rel));

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}
const HAVE_PROMTOOL = onPath('promtool');
const HAVE_OPENSSL = onPath('openssl');
if (!HAVE_PROMTOOL)
  console.warn(
    'docker-assets: promtool not on PATH (Debian: apt-get install prometheus); Prometheus config checks are skipped',
  );
if (!HAVE_OPENSSL)
  console.warn(
    'docker-assets: openssl not on PATH; docker/gen-secrets.sh cannot run, config-loading checks are skipped',
  );

const temps: string[] = [];
function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  temps.push(dir);
  return dir;
}
afterAll(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

/** Runs docker/gen-secrets.sh on a temp copy of docker/ and returns the directory of generated secret files. */
let generated: string | undefined;
function generatedSecrets(): string {
  if (generated) return generated;
  const copy = tempDir('pgwarden-docker-');
  cpSync(path.join(DOCKER, 'gen-secrets.sh'), path.join(copy, 'gen-secrets.sh'));
  const r = spawnSync('sh', [path.join(copy, 'gen-secrets.sh')], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  generated = path.join(copy, 'secrets');
  return generated;
}

/** A pgwarden config text with absolute mount prefixes ("/run/secrets/") rewritten to temp directories, in one pass. */
function rewriteMounts(text: string, mounts: Record<string, string>): string {
  const keys = Object.keys(mounts).sort((a, b) => b.length - a.length);
  const re = new RegExp(keys.map((k) => k.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
  return text.replace(re, (m) => mounts[m] as string);
}

// ---------------------------------------------------------------------------------------------
// PromQL: the metric names and label names an expression reads

const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'atan2', 'inf', 'nan']);
/** Aggregation operators: followed by `by (…)` / `without (…)` as often as by their argument list. */
const AGGREGATIONS = new Set([
  'sum',
  'min',
  'max',
  'avg',
  'group',
  'stddev',
  'stdvar',
  'count',
  'count_values',
  'bottomk',
  'topk',
  'quantile',
  'limitk',
  'limit_ratio',
]);
const GROUPING = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);

interface Selector {
  metric: string;
  labels: string[];
}

/** Splits a PromQL expression into selectors (metric + matcher label names) and grouping labels; functions and keywords are skipped. */
function promqlRefs(expr: string): { selectors: Selector[]; grouping: string[] } {
  // Grafana's interval variables are not PromQL; any duration stands in for them.
  const src = expr.replace(/\$__(rate_interval|interval|range)/g, '5m');
  const selectors: Selector[] = [];
  const grouping: string[] = [];
  const re =
    /"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`|\[[^\]]*\]|\{[^}]*\}|\d*\.?\d+(?:[eE][+-]?\d+)?|[A-Za-z_:][A-Za-z0-9_:]*|\S/g;
  const tokens = [...src.matchAll(re)].map((m) => m[0]);
  const labelNames = (block: string) =>
    [
      ...block
        .slice(1, -1)
        .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
        .matchAll(/([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)/g),
    ].map((m) => m[1] as string);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as string;
    if (!/^[A-Za-z_:]/.test(t)) {
      if (t.startsWith('{')) throw new Error(`selector without a metric name in ${JSON.stringify(expr)}`);
      continue;
    }
    const next = tokens[i + 1];
    if (GROUPING.has(t.toLowerCase())) {
      if (next === '(') {
        let j = i + 2;
        for (; j < tokens.length && tokens[j] !== ')'; j++)
          if (/^[A-Za-z_]/.test(tokens[j] as string)) grouping.push(tokens[j] as string);
        i = j;
      }
      continue;
    }
    if (PROMQL_KEYWORDS.has(t.toLowerCase()) || AGGREGATIONS.has(t.toLowerCase()) || next === '(') continue; // keyword, aggregation or function call
    if (next?.startsWith('{')) {
      selectors.push({ metric: t, labels: labelNames(next) });
      i++;
    } else {
      selectors.push({ metric: t, labels: [] });
    }
  }
  return { selectors, grouping };
}

/** Every PromQL expression in a Grafana dashboard: panel targets (rows included) and query variables. */
function dashboardExprs(dash: any): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  const visit = (panels: any[] | undefined) => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? [])
        if (typeof t.expr === 'string') out.push({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr });
      visit(p.panels);
    }
  };
  visit(dash.panels);
  for (const v of dash.templating?.list ?? []) {
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    if (typeof q !== 'string') continue;
    // label_values(selector, label) is Grafana's, not PromQL: check the selector, and the label below.
    const lv = /^label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)$/.exec(q.trim());
    out.push({ where: `variable $${v.name}`, expr: lv ? `sum by (${lv[2]}) (${lv[1]})` : q });
  }
  return out;
}

/** Parses Prometheus text exposition: series name → label names seen, and family name → TYPE. */
function parseExposition(text: string): { series: Map<string, Set<string>>; types: Map<string, string> } {
  const series = new Map<string, Set<string>>();
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) types.set(type[1] as string, type[2] as string);
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s/.exec(line);
    if (!m) continue;
    const labels = series.get(m[1] as string) ?? new Set<string>();
    for (const l of (m[2] ?? '').matchAll(/([A-Za-z_][A-Za-z0-9_]*)="/g)) labels.add(l[1] as string);
    series.set(m[1] as string, labels);
  }
  return { series, types };
}

/** Labels Prometheus attaches at scrape time (target labels), not present in the exposition. */
const TARGET_LABELS = new Set(['instance', 'job']);
/** Series Prometheus itself synthesizes per target; allowed in alert rules only. */
const SYNTHETIC_SERIES = new Set(['up']);

/** Problems with an expression against a scrape: unknown series, histogram base names, unknown labels. */
function checkAgainstScrape(
  expr: string,
  scrape: ReturnType<typeof parseExposition>,
  allowSynthetic = false,
): string[] {
  const problems: string[] = [];
  const { selectors, grouping } = promqlRefs(expr);
  const available = new Set<string>(TARGET_LABELS);
  for (const sel of selectors) {
    if (allowSynthetic && SYNTHETIC_SERIES.has(sel.metric)) continue;
    const suffix = /_(bucket|sum|count)$/.exec(sel.metric);
    const base = suffix ? sel.metric.slice(0, -suffix[0].length) : sel.metric;
    const baseType = scrape.types.get(base);
    if (!suffix && (baseType === 'histogram' || baseType === 'summary')) {
      problems.push(`${sel.metric} is a ${baseType}: query ${sel.metric}_bucket, _sum or _count`);
      continue;
    }
    if (suffix?.[1] === 'bucket' && baseType !== 'histogram')
      problems.push(`${sel.metric}: ${base} is not a histogram (TYPE ${baseType ?? 'unknown'})`);
    const labels = scrape.series.get(sel.metric);
    if (!labels) {
      problems.push(`${sel.metric} is not in the /metrics scrape`);
      continue;
    }
    for (const l of labels) available.add(l);
    for (const l of sel.labels)
      if (!labels.has(l) && !TARGET_LABELS.has(l))
        problems.push(`${sel.metric} has no label "${l}" (has: ${[...labels].join(', ') || 'none'})`);
  }
  for (const l of grouping)
    if (!available.has(l))
      problems.push(`grouping label "${l}" is on none of ${selectors.map((s) => s.metric).join(', ')}`);
  return problems;
}

// ---------------------------------------------------------------------------------------------

describe('docker/Dockerfile', () => {
  const text = read('Dockerfile');
  const lines = text.split('\n');

  it('is a multi-stage node:20-bookworm-slim build: production deps only, non-root, the documented entrypoint', () => {
    expect(lines[0]).toMatch(/^# /);
    expect(text).toMatch(/^ARG NODE_IMAGE=node:20-bookworm-slim$/m);
    expect(lines.filter((l) => /^FROM \$\{NODE_IMAGE\}/.test(l))).toHaveLength(2);
    expect(text).toMatch(/npm ci --omit=dev/);
    // Numeric, so Kubernetes runAsNonRoot can verify it; and it is what the Deployment runs as.
    const user = /^USER (\d+):(\d+)$/m.exec(text);
    expect(user?.[1]).not.toBe('0');
    const deployment = k8sDocs().find((d) => d.kind === 'Deployment');
    expect(String(deployment.spec.template.spec.securityContext.runAsUser)).toBe(user?.[1]);
    expect(text).toMatch(/^EXPOSE 6432 9187$/m);
    expect(text).toMatch(/^ENTRYPOINT \["node", "bin\/pgwarden.js"\]$/m);
    expect(text).toMatch(/^CMD \["serve", "--config", "\/etc\/pgwarden\/pgwarden.yaml"\]$/m);
    expect(text).toMatch(/^HEALTHCHECK .*\/healthz/ms);
  });

  it('copies only paths that exist and that its .dockerignore lets into the build context', () => {
    const ignore = read('Dockerfile.dockerignore')
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignore[0]).toBe('**'); // an allowlist: secrets, .git and node_modules never reach the context
    const copies = lines.filter((l) => /^COPY /.test(l) && !l.includes('--from='));
    expect(copies.length).toBeGreaterThan(0);
    for (const line of copies) {
      const parts = line.split(/\s+/).slice(1, -1);
      for (const src of parts) {
        expect(existsSync(path.join(ROOT, src)), `${src} exists`).toBe(true);
        expect(
          ignore.some((p) => p === `!${src}` || p === `!${src}/`),
          `${src} is re-included by Dockerfile.dockerignore`,
        ).toBe(true);
      }
    }
    expect(existsSync(path.join(ROOT, 'bin/pgwarden.js'))).toBe(true);
  });
});

describe('docker/compose.yaml', () => {
  const compose = yamlFile('compose.yaml');
  const services = compose.services as Record<string, any>;

  it('parses and defines postgres, pgwarden, prometheus and grafana', () => {
    expect(read('compose.yaml').split('\n')[0]).toMatch(/^# /);
    expect(Object.keys(services).sort()).toEqual(['grafana', 'pgwarden', 'postgres', 'prometheus']);
    expect(services.postgres.image).toBe('postgres:15');
    expect(services.pgwarden.build).toEqual({ context: '..', dockerfile: 'docker/Dockerfile' });
    expect(existsSync(path.join(DOCKER, services.pgwarden.build.context, services.pgwarden.build.dockerfile))).toBe(
      true,
    );
    // Published ports stay on the host's loopback.
    for (const [name, svc] of Object.entries(services))
      for (const p of svc.ports ?? []) expect(String(p), name).toMatch(/^127\.0\.0\.1:/);
  });

  it('references only files that exist: bind mounts, secret sources (made by gen-secrets.sh) and secrets each service declares', () => {
    for (const [name, svc] of Object.entries(services)) {
      for (const v of svc.volumes ?? []) {
        const [src] = String(v).split(':');
        if (src?.startsWith('.')) expect(existsSync(path.join(DOCKER, src)), `${name}: ${src}`).toBe(true);
      }
      const targets = new Set<string>(
        (svc.secrets ?? []).map((s: any) => `/run/secrets/${typeof s === 'string' ? s : (s.target ?? s.source)}`),
      );
      for (const s of svc.secrets ?? [])
        expect(compose.secrets, name).toHaveProperty(typeof s === 'string' ? s : s.source);
      // Every /run/secrets path the service's environment names is mounted into it.
      for (const value of Object.values(svc.environment ?? {})) {
        if (String(value).startsWith('/run/secrets/'))
          expect(targets.has(String(value)), `${name}: ${value}`).toBe(true);
      }
    }
    const script = read('gen-secrets.sh');
    for (const [name, s] of Object.entries(compose.secrets as Record<string, { file: string }>)) {
      expect(s.file, name).toMatch(/^\.\/secrets\//);
      expect(script, `gen-secrets.sh creates ${s.file}`).toContain(`"$dir/${path.basename(s.file)}"`);
    }
    expect(read('secrets/.gitignore')).toMatch(/^\*$/m);
  });

  it('mounts into pgwarden and postgres every /run/secrets file their configs read', () => {
    const mounted = (svc: any) =>
      new Set<string>((svc.secrets ?? []).map((s: any) => `/run/secrets/${s.target ?? s.source}`));
    const pgwardenPaths = [...read('pgwarden/pgwarden.yaml').matchAll(/\/run\/secrets\/[\w.-]+/g)].map((m) => m[0]);
    expect(pgwardenPaths.length).toBeGreaterThanOrEqual(4);
    for (const p of pgwardenPaths) expect(mounted(services.pgwarden).has(p), p).toBe(true);
    const initPaths = [...read('postgres/init.sql').matchAll(/\/run\/secrets\/[\w.-]+/g)].map((m) => m[0]);
    for (const p of initPaths) expect(mounted(services.postgres).has(p), p).toBe(true);
    // pgwarden.yaml and policy.yaml reach /etc/pgwarden, where the image's CMD looks.
    expect(services.pgwarden.volumes).toContain('./pgwarden:/etc/pgwarden:ro');
  });

  it('has a postgres init script that PostgreSQL’s own grammar parses', async () => {
    const sql = read('postgres/init.sql');
    expect(sql.split('\n')[0]).toMatch(/^-- /);
    expect(sql).toMatch(/CREATE DATABASE app;/);
    expect(sql).toMatch(/CREATE ROLE pgwarden LOGIN PASSWORD :'upstream_password' NOSUPERUSER/);
    // psql meta-commands and variables are psql's; the rest must be plain SQL.
    const plain = sql
      .split('\n')
      .filter((l) => !l.startsWith('\\'))
      .join('\n')
      .replace(/:'[A-Za-z_]+'/g, "'x'");
    await loadModule();
    const stmts = parseSync(plain).stmts ?? [];
    expect(stmts.length).toBeGreaterThan(10);
  });

  it('wires Grafana to Prometheus and its dashboards directory', () => {
    const ds = yamlFile('grafana/provisioning/datasources/prometheus.yaml').datasources[0];
    expect(ds.type).toBe('prometheus');
    expect(new URL(ds.url).hostname).toBe('prometheus');
    const provider = yamlFile('grafana/provisioning/dashboards/dashboards.yaml').providers[0];
    expect(services.grafana.volumes).toContain(`./grafana/dashboards:${provider.options.path}:ro`);
    const dash = JSON.parse(read('grafana/dashboards/pgwarden.json'));
    const uids = new Set<string>();
    const visit = (x: any) => {
      if (x && typeof x === 'object') {
        if (x.type === 'prometheus' && typeof x.uid === 'string') uids.add(x.uid);
        for (const v of Object.values(x)) visit(v);
      }
    };
    visit(dash);
    expect([...uids]).toEqual([ds.uid]);
    expect(services.grafana.environment.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH).toBe(
      `${provider.options.path}/pgwarden.json`,
    );
  });
});

describe.skipIf(!HAVE_OPENSSL)('docker/pgwarden config (needs openssl for docker/gen-secrets.sh)', () => {
  it('gen-secrets.sh creates every secret file compose declares, readable by container users, and is idempotent', () => {
    const dir = generatedSecrets();
    const compose = yamlFile('compose.yaml');
    for (const s of Object.values(compose.secrets as Record<string, { file: string }>))
      expect(existsSync(path.join(dir, path.basename(s.file))), s.file).toBe(true);
    const before = readFileSync(path.join(dir, 'jwt-secret'));
    const again = spawnSync('sh', [path.join(path.dirname(dir), 'gen-secrets.sh')], { encoding: 'utf8' });
    expect(again.status).toBe(0);
    expect(readFileSync(path.join(dir, 'jwt-secret')).equals(before)).toBe(true);
  });

  it('pgwarden.yaml loads with loadConfig once the secret files exist, and policy.yaml passes policy check', async () => {
    const secrets = generatedSecrets();
    const etc = tempDir('pgwarden-etc-');
    cpSync(path.join(DOCKER, 'pgwarden'), etc, { recursive: true });
    const configFile = path.join(etc, 'pgwarden.yaml');
    writeFileSync(configFile, rewriteMounts(readFileSync(configFile, 'utf8'), { '/run/secrets/': `${secrets}/` }));
    const res = loadConfig(configFile, { env: {} });
    expect(res.ok, res.ok ? '' : formatConfigIssues(res.issues)).toBe(true);
    if (!res.ok) return;
    expect(res.config.listen.tls).toBeDefined();
    expect(res.config.auth.allowCleartext).toBe('never');
    expect(res.config.metrics).toEqual({ host: '0.0.0.0', port: 9187 });
    expect(res.config.upstream.password).toBe(readFileSync(path.join(secrets, 'upstream-password'), 'utf8').trim());
    expect(res.config.policyFile).toBe(path.join(etc, 'policy.yaml'));

    const check = await policyCheck(path.join(DOCKER, 'pgwarden/policy.yaml'));
    expect(check.ok, check.output).toBe(true);
  });

  it('the Prometheus scrape target is the pgwarden service on its configured metrics port', () => {
    const prom = yamlFile('prometheus/prometheus.yml');
    const job = prom.scrape_configs.find((j: any) => j.job_name === 'pgwarden');
    const port = yamlFile('pgwarden/pgwarden.yaml').metrics.port;
    expect(job.static_configs[0].targets).toEqual([`pgwarden:${port}`]);
    expect(job.metrics_path ?? '/metrics').toBe('/metrics');
  });
});

describe.skipIf(!HAVE_PROMTOOL)('Prometheus config (promtool; skipped when promtool is not on PATH)', () => {
  it('promtool check config accepts prometheus.yml and its rule files', () => {
    const dir = tempDir('pgwarden-prom-');
    cpSync(path.join(DOCKER, 'prometheus'), dir, { recursive: true });
    const r = spawnSync('promtool', ['check', 'config', path.join(dir, 'prometheus.yml')], { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toMatch(/SUCCESS/);
  });

  it('every dashboard query is valid PromQL (promtool check rules on each expression)', () => {
    const dash = JSON.parse(read('grafana/dashboards/pgwarden.json'));
    const exprs = dashboardExprs(dash);
    const rules = {
      groups: [
        {
          name: 'dashboard',
          rules: exprs.map((e, i) => ({
            record: `dashboard:expr_${i}`,
            expr: e.expr.replace(/\$__(rate_interval|interval|range)/g, '5m'),
          })),
        },
      ],
    };
    const file = path.join(tempDir('pgwarden-rules-'), 'dashboard.rules.yml');
    writeFileSync(file, JSON.stringify(rules));
    const r = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });
});

function k8sDocs(): any[] {
  const docs: any[] = [];
  for (const f of readdirSync(path.join(DOCKER, 'k8s')).filter(
    (n) => n.endsWith('.yaml') && n !== 'kustomization.yaml',
  )) {
    for (const d of parseAllDocuments(read(`k8s/${f}`))) {
      if (d.errors.length > 0) throw new Error(`docker/k8s/${f}: ${d.errors.map((e) => e.message).join('; ')}`);
      const js = d.toJS();
      if (js) docs.push({ ...js, __file: f });
    }
  }
  return docs;
}

describe('docker/k8s manifests', () => {
  const docs = k8sDocs();
  const byKind = (kind: string) => docs.filter((d) => d.kind === kind);
  const deployment = byKind('Deployment')[0];
  const pod = deployment?.spec.template.spec;
  const container = pod?.containers[0];
  const configMap = byKind('ConfigMap')[0];

  it('parse (multi-document) into the expected kinds, listed by the kustomization', () => {
    expect(docs.map((d) => d.kind).sort()).toEqual([
      'ConfigMap',
      'Deployment',
      'NetworkPolicy',
      'PodDisruptionBudget',
      'Secret',
      'Secret',
      'Service',
      'Service',
    ]);
    const kustomization = yamlFile('k8s/kustomization.yaml');
    const files = new Set(docs.map((d) => d.__file));
    expect(new Set(kustomization.resources)).toEqual(files);
    for (const f of files) expect(read(`k8s/${f}`).split('\n')[0]).toMatch(/^# /);
  });

  it('run two hardened replicas probed on /readyz and /healthz', () => {
    expect(deployment.spec.replicas).toBe(2);
    expect(deployment.spec.selector.matchLabels).toEqual(pod && deployment.spec.template.metadata.labels);
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(container.resources.requests).toBeDefined();
    expect(container.resources.limits.memory).toBeDefined();
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(container.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(container.args).toEqual(['serve', '--config', '/etc/pgwarden/pgwarden.yaml']);
    const named = new Map(container.ports.map((p: any) => [p.name, p.containerPort]));
    expect(named.get('postgres')).toBe(6432);
    expect(named.get('metrics')).toBe(yamlFile('pgwarden/pgwarden.yaml').metrics.port);
  });

  it("keep the admin listener off the clients' Service and admit only Prometheus to it", () => {
    const services = new Map(byKind('Service').map((s) => [s.metadata.name, s]));
    for (const s of services.values()) expect(s.spec.selector).toEqual(deployment.spec.template.metadata.labels);
    const ports = (name: string) => services.get(name).spec.ports.map((p: any) => [p.port, p.protocol, p.targetPort]);
    // The clients' Service may become a LoadBalancer; the unauthenticated admin port must not ride along.
    expect(ports('pgwarden')).toEqual([[6432, 'TCP', 'postgres']]);
    expect(ports('pgwarden-admin')).toEqual([[9187, 'TCP', 'metrics']]);
    expect(services.get('pgwarden-admin').spec.type).toBe('ClusterIP');
    const np = byKind('NetworkPolicy')[0];
    expect(np.spec.podSelector.matchLabels).toEqual(deployment.spec.template.metadata.labels);
    expect(np.spec.policyTypes).toEqual(['Ingress']);
    // Every rule that opens the metrics port names who may use it; the rule without `from` opens only postgres.
    for (const rule of np.spec.ingress) {
      const opened = rule.ports.map((p: any) => p.port);
      if (opened.includes('metrics')) expect(rule.from?.length ?? 0).toBeGreaterThan(0);
      if (rule.from === undefined) expect(opened).toEqual(['postgres']);
    }
  });

  it('mount every file the embedded config names from a ConfigMap or Secret key that exists', () => {
    const cfg = parseYaml(configMap.data['pgwarden.yaml']);
    const files = [
      cfg.listen.tls.certFile,
      cfg.listen.tls.keyFile,
      cfg.upstream.passwordFile,
      cfg.auth.secretFile,
      cfg.policyFile,
    ].map((f: string) => path.posix.resolve('/etc/pgwarden', f));
    const volumes = new Map<string, any>(pod.volumes.map((v: any) => [v.name, v]));
    for (const file of files) {
      const mount = container.volumeMounts.find((m: any) => path.posix.dirname(file) === m.mountPath);
      expect(mount, `a volumeMount at ${path.posix.dirname(file)}`).toBeDefined();
      expect(mount.subPath, 'no subPath: it would never see updates').toBeUndefined();
      const vol = volumes.get(mount.name);
      const source = vol.configMap
        ? docs.find((d) => d.kind === 'ConfigMap' && d.metadata.name === vol.configMap.name)
        : docs.find((d) => d.kind === 'Secret' && d.metadata.name === vol.secret?.secretName);
      expect(source, `${mount.name} comes from a manifest here`).toBeDefined();
      expect({ ...source.data, ...source.stringData }, file).toHaveProperty(path.posix.basename(file));
    }
  });

  it('ship placeholder secrets that fail closed, and a config that loads once real secrets replace them', async () => {
    const tmp = tempDir('pgwarden-k8s-');
    const mounts: Record<string, string> = {};
    for (const m of container.volumeMounts.filter(
      (v: any) => !pod.volumes.find((x: any) => x.name === v.name).emptyDir,
    ))
      mounts[`${m.mountPath}/`] = path.join(tmp, m.mountPath.replace(/\//g, '_')) + '/';
    const write = (dirKey: string, name: string, value: string | Buffer) => {
      mkdirSync(mounts[dirKey] as string, { recursive: true });
      writeFileSync(path.join(mounts[dirKey] as string, name), value);
    };
    const cfgDir = mounts['/etc/pgwarden/'] as string;
    write('/etc/pgwarden/', 'pgwarden.yaml', rewriteMounts(configMap.data['pgwarden.yaml'], mounts));
    write('/etc/pgwarden/', 'policy.yaml', configMap.data['policy.yaml']);
    const check = await policyCheck(path.join(cfgDir, 'policy.yaml'));
    expect(check.ok, check.output).toBe(true);
    const secretDocs = byKind('Secret');
    const dirOf = (secretName: string) => {
      const vol = pod.volumes.find((v: any) => v.secret?.secretName === secretName);
      return `${container.volumeMounts.find((m: any) => m.name === vol.name).mountPath}/`;
    };
    for (const s of secretDocs)
      for (const [k, v] of Object.entries(s.stringData as Record<string, string>)) write(dirOf(s.metadata.name), k, v);
    const placeholder = loadConfig(path.join(cfgDir, 'pgwarden.yaml'), { env: {} });
    expect(placeholder.ok).toBe(false);
    if (!placeholder.ok) {
      const paths = placeholder.issues.map((i) => i.path);
      const msg = (p: string) =>
        placeholder.issues
          .filter((i) => i.path === p)
          .map((i) => i.message)
          .join('; ');
      // A 9-byte key is refused: nobody runs on a key everyone knows. Non-PEM TLS files are refused too.
      expect(msg('auth.secretFile')).toMatch(/at least 32 are required/);
      expect(msg('listen.tls.certFile')).toMatch(/holds no PEM certificate/);
      expect(msg('listen.tls.keyFile')).toMatch(/holds no PEM private key/);
      expect(paths).not.toContain('upstream.passwordFile');
    }
    if (!HAVE_OPENSSL) return;
    const real = generatedSecrets();
    write(dirOf('pgwarden-credentials'), 'jwt-secret', readFileSync(path.join(real, 'jwt-secret')));
    write(dirOf('pgwarden-credentials'), 'upstream-password', readFileSync(path.join(real, 'upstream-password')));
    write(dirOf('pgwarden-tls'), 'tls.crt', readFileSync(path.join(real, 'tls.crt')));
    write(dirOf('pgwarden-tls'), 'tls.key', readFileSync(path.join(real, 'tls.key')));
    const res = loadConfig(path.join(cfgDir, 'pgwarden.yaml'), { env: {} });
    expect(res.ok, res.ok ? '' : formatConfigIssues(res.issues)).toBe(true);
    if (res.ok) expect(res.config.upstream.sslmode).toBe('verify-full');
  });
});

describe('the PromQL checker used below', () => {
  it('flags unknown series, histogram base names, unknown labels and unknown grouping labels', () => {
    const scrape = parseExposition(
      [
        '# TYPE h histogram',
        'h_bucket{le="1"} 1',
        'h_sum 1',
        'h_count 1',
        '# TYPE c counter',
        'c_total{reason="x"} 1',
      ].join('\n') + '\n',
    );
    expect(
      checkAgainstScrape('sum by (reason) (rate(c_total{reason="x",instance=~"$instance"}[$__rate_interval]))', scrape),
    ).toEqual([]);
    expect(checkAgainstScrape('histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))', scrape)).toEqual([]);
    expect(checkAgainstScrape('rate(h[5m])', scrape)).toEqual(['h is a histogram: query h_bucket, _sum or _count']);
    expect(checkAgainstScrape('rate(process_cpu_seconds_total[5m])', scrape)).toEqual([
      'process_cpu_seconds_total is not in the /metrics scrape',
    ]);
    expect(checkAgainstScrape('c_total{result="ok"}', scrape)).toEqual(['c_total has no label "result" (has: reason)']);
    expect(checkAgainstScrape('sum by (role) (c_total)', scrape)).toEqual([
      'grouping label "role" is on none of c_total',
    ]);
    expect(checkAgainstScrape('up == 0', scrape, true)).toEqual([]);
  });
});

describe('dashboard and alert queries against a live /metrics scrape', () => {
  let scrapeText = '';
  let metricsPort = 0;
  let closeAll: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    // Imported here so the static checks above still run when the proxy itself does not load.
    const { startTestProxy, connectPg, pgError } = await import('../helpers/proxy.ts');
    const tp = await startTestProxy();
    const server = await startMetricsServer(tp.proxy.metrics, '127.0.0.1', 0, async () => true);
    closeAll = async () => {
      await server.close();
      await tp.close();
    };
    metricsPort = server.port;
    // Real traffic: an allowed and a denied statement, a clean disconnect, a refused login, a policy reload.
    const c = await connectPg(tp);
    await c.query('SELECT id, total FROM public.orders ORDER BY id LIMIT 5');
    const denied = await pgError(() => c.query('SELECT value FROM public.secrets'));
    expect(denied.code).toBe('42501');
    await c.end();
    const bad = new pg.Client(tp.pgConfig('not-a-token'));
    bad.on('error', () => {});
    await bad.connect().then(
      () => expect.fail('a bad token logged in'),
      () => {},
    );
    await bad.end().catch(() => {});
    await tp.proxy.reload();
    // Session ends are observed asynchronously: wait until both sessions are counted.
    const deadline = Date.now() + 5_000;
    for (;;) {
      scrapeText = await httpGet(metricsPort, '/metrics').then((r) => r.body);
      if (sumOf(scrapeText, 'pgwarden_sessions_ended_total') >= 2 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  });
  afterAll(async () => {
    await closeAll?.();
  });

  it('the scrape has the traffic just made', () => {
    const scrape = parseExposition(scrapeText);
    for (const name of [
      'pgwarden_sessions_active',
      'pgwarden_logins_total',
      'pgwarden_statements_total',
      'pgwarden_policy_decision_seconds_bucket',
      'pgwarden_sessions_ended_total',
      'pgwarden_policy_reloads_total',
      'pgwarden_policy_version',
    ]) {
      expect(scrape.series.has(name), name).toBe(true);
    }
    expect(scrapeText).toMatch(/^pgwarden_statements_total\{[^}]*decision="deny"[^}]*\} 1$/m);
    expect(scrapeText).toMatch(/^pgwarden_logins_total\{result="refused",reason="[a-z_]+"\} 1$/m);
    expect(scrapeText).toMatch(/^pgwarden_policy_reloads_total\{result="ok"\} 1$/m);
  });

  it('every metric and label a Grafana panel or variable queries is one pgwarden exports', () => {
    const scrape = parseExposition(scrapeText);
    const exprs = dashboardExprs(JSON.parse(read('grafana/dashboards/pgwarden.json')));
    expect(exprs.length).toBeGreaterThanOrEqual(15);
    const problems = exprs.flatMap((e) => checkAgainstScrape(e.expr, scrape).map((p) => `${e.where}: ${p}`));
    expect(problems).toEqual([]);
    // And the panels the operators asked for are there.
    const all = exprs.map((e) => e.expr).join('\n');
    for (const m of [
      'pgwarden_sessions_active',
      'pgwarden_statements_total',
      'pgwarden_policy_decision_seconds_bucket',
      'pgwarden_logins_total',
      'pgwarden_sessions_ended_total',
      'pgwarden_policy_version',
      'pgwarden_policy_reloads_total',
    ]) {
      expect(all).toContain(m);
    }
    expect(all).toMatch(/histogram_quantile\(0\.5,/);
    expect(all).toMatch(/histogram_quantile\(0\.99,/);
    expect(all).toMatch(/reason="expired"/);
    expect(all).toMatch(/reason="revoked"/);
  });

  it('every metric an alert rule queries is one pgwarden exports (or up, which Prometheus adds)', () => {
    const scrape = parseExposition(scrapeText);
    const rules = yamlFile('prometheus/alerts.yml').groups.flatMap((g: any) => g.rules);
    expect(rules.length).toBeGreaterThan(0);
    const problems = rules.flatMap((r: any) => checkAgainstScrape(r.expr, scrape, true).map((p) => `${r.alert}: ${p}`));
    expect(problems).toEqual([]);
  });

  it('the image HEALTHCHECK command passes against a live /healthz and fails when nothing listens', async () => {
    const line = read('Dockerfile')
      .split('\n')
      .find((l) => /^\s*CMD \["node", "-e"/.test(l)) as string;
    const argv = JSON.parse(line.trim().slice('CMD '.length)) as string[];
    // Asynchronously: the metrics server lives in this process, and spawnSync would block it from answering.
    const run = (port: number) =>
      new Promise<number | null>((resolve) => {
        const child = spawn(argv[0] as string, argv.slice(1), {
          env: { ...process.env, PGWARDEN_METRICS_PORT: String(port) },
          stdio: 'ignore',
        });
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        child.on('exit', (code) => {
          clearTimeout(timer);
          resolve(code);
        });
      });
    expect((await httpGet(metricsPort, '/healthz')).status).toBe(200);
    expect(await run(metricsPort)).toBe(0);
    const closed = await freePort();
    expect(await run(closed)).toBe(1);
  });
});

function sumOf(text: string, name: string): number {
  let n = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'gm'))) n += Number(m[1]);
  return n;
}

function httpGet(port: number, urlPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: urlPath }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** A loopback port with nothing listening (bound, then released). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = http.createServer();
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}
