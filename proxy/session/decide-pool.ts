// A small, bounded pool of worker threads that parse and decide large statements, so no statement text can stall the event loop every session shares.
//
// Why: parsing is synchronous WASM (policy/parser.ts). A 1 MiB statement costs seconds of the parser's time (a long
// SELECT list still does; nesting too deep is now found without the scanner) and grows its WASM memory by up to ~1 GB,
// which WASM can never give back.
// Statements longer than `offloadAboveBytes` (policy-gate.ts; the nesting pre-screen threshold, 4 KiB, by default:
// shorter ones cannot cost more than a few milliseconds) are decided here by the very same evaluateWithFacts() on a
// copy of the same role, session view and catalog, so the answer is the main thread's.
//
// Bounds, each a refusal of that one statement, never a wait without end:
//   - `size` workers at most, started on demand; each job runs alone on its worker.
//   - `maxQueue` jobs waiting; one more is refused at once with 53000 (insufficient_resources), as is a job that waited
//     longer than `queueTimeoutMs`.
//   - `timeoutMs` to decide one statement; past it the worker is terminated and replaced and the statement refused with
//     54000 (program_limit_exceeded). A worker that fails (an exception, exit, or running out of its heap limit,
//     `maxHeapMb`) refuses its statement the same way. Fail closed: no statement is ever allowed for want of an answer.
//   - Memory: the WASM parser's memory never shrinks: its pages stay touched up to the high-water mark of the largest
//     input (128 MiB initially, growing to ~1 GB for a hostile 1 MiB text). A worker given a text of
//     `recycleAfterTextBytes` (256 KiB) or more, or whose WASM memory grew by more than `recycleAfterGrowthBytes`, is
//     replaced after its job, and workers idle for `idleMs` end, so a burst of large statements leaves nothing behind
//     but what the C allocator keeps in its per-thread arenas (docs/limits.md, MALLOC_ARENA_MAX). Not after every job:
//     each new thread costs ~0.4 s of CPU and some of that arena memory. A worker whose parser trapped is replaced too
//     (it keeps no spare parser instance).
// Workers run at nice 10 (policy/worker/bootstrap.mjs), so the event loop takes the CPU from them, not the reverse.
// Workers are unref'd: they never keep the process alive, and close() ends them.
import { Worker } from 'node:worker_threads';
import os from 'node:os';
import type { CatalogSnapshot, Decision, SessionView } from '../../policy/types.ts';
import type { EvaluationFacts } from '../../policy/evaluate.ts';
import { DEFAULT_PARSER_LIMITS, type ParserLimits } from '../../policy/parser.ts';
import type { AnalysisPlan } from '../../policy/server-plan.ts';
import type { DecideJob, DecideWorkerData, PlanJob, WorkerReply } from '../../policy/worker/decide-worker.ts';
import { SqlState } from '../../lib/sqlstate.ts';
import { errorMessage } from '../../lib/error-message.ts';

type Deny = Extract<Decision, { allow: false }>;

export interface DecidePoolOptions {
  /** Workers at most (default: one fewer than the CPUs, at least 1, at most 4). */
  size?: number;
  /** Jobs waiting for a worker at most; beyond, a job is refused at once (53000). */
  maxQueue?: number;
  /** Time allowed to decide one statement once a worker has it; past it, 54000 and the worker is replaced. */
  timeoutMs?: number;
  /** Longest wait for a worker; past it, 53000. */
  queueTimeoutMs?: number;
  /** A worker idle this long ends. */
  idleMs?: number;
  /**
   * A worker given a text at least this long (UTF-16 units), or whose WASM parser was handed one, is replaced after its
   * job: the parser's memory stays touched up to what its largest input needed.
   */
  recycleAfterTextBytes?: number;
  /** A worker whose WASM memory grew by more than this beyond its initial size is replaced after its job. */
  recycleAfterGrowthBytes?: number;
  /** V8 old-generation limit of each worker, in MB; a worker that exceeds it dies and its statement is refused. */
  maxHeapMb?: number;
  /** Parser limits the workers use (those of the main thread). */
  parserLimits?: ParserLimits;
}

export const DECIDE_POOL_DEFAULTS = {
  size: Math.max(1, Math.min(4, os.availableParallelism() - 1)),
  maxQueue: 16,
  timeoutMs: 10_000,
  queueTimeoutMs: 10_000,
  idleMs: 5_000,
  recycleAfterTextBytes: 256 * 1024,
  recycleAfterGrowthBytes: 32 * 1024 * 1024,
  maxHeapMb: 512,
} as const;

/** The pool's options from the config's limits (limits.decideWorkers, limits.decideWorkerHeap); 0 or absent keeps a default. */
export function decidePoolOptions(limits: {
  readonly decideWorkers?: number | undefined;
  readonly decideWorkerHeap?: number | undefined;
}): DecidePoolOptions {
  const opts: DecidePoolOptions = {};
  if (limits.decideWorkers !== undefined && limits.decideWorkers > 0) opts.size = limits.decideWorkers;
  if (limits.decideWorkerHeap !== undefined && limits.decideWorkerHeap > 0)
    opts.maxHeapMb = Math.max(16, Math.floor(limits.decideWorkerHeap / (1024 * 1024)));
  return opts;
}

export type PoolAnswer = { ok: true; facts: EvaluationFacts } | { ok: false; decision: Deny };
export type PlanAnswer = { ok: true; plan: AnalysisPlan } | { ok: false; decision: Deny };

type Reply = { ok: true; value: unknown } | { ok: false; decision: Deny };
type Request = { type: 'decide'; req: DecideRequest } | { type: 'plan'; text: string; paramTypes: readonly number[] };

export interface DecideRequest {
  sql: string;
  mode: 'simple' | 'parse';
  view: SessionView;
  catalog: CatalogSnapshot;
  policyVersion: number;
}

export interface DecidePoolStats {
  decided: number;
  refusedBusy: number;
  timedOut: number;
  workerFailures: number;
  workersStarted: number;
  running: number;
  queued: number;
  workers: number;
}

interface Job {
  id: number;
  req: Request;
  resolve: (a: Reply) => void;
  queuedAt: number;
  queueTimer: NodeJS.Timeout | undefined;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  job: Job | undefined;
  /** The catalog snapshot this worker holds, by pool-wide id. */
  catalogId: number;
  timer: NodeJS.Timeout | undefined;
  idleTimer: NodeJS.Timeout | undefined;
  /** Replace after the current job (it decided a long text). */
  retire: boolean;
  gone: boolean;
}

const BOOTSTRAP = new URL('../../policy/worker/bootstrap.mjs', import.meta.url);

function refusal(sqlstate: string, reason: string, message: string, hint: string | undefined): Deny {
  return {
    allow: false,
    ruleId: 'builtin.decide',
    sqlstate,
    message,
    detail: `${reason} (rule: builtin.decide)`,
    hint,
    reason,
    statements: [],
  };
}

/** 53000: too many large statements are waiting to be decided. */
export function busyRefusal(why: string): Deny {
  return refusal(
    SqlState.InsufficientResources,
    'decide_pool_busy',
    `statement refused by pgwarden: too many large statements are being decided at once (${why})`,
    'retry shortly, or send shorter statements',
  );
}

/** 54000: deciding this statement took too long or failed; it was not run. */
export function failedRefusal(reason: 'decide_timeout' | 'decide_worker_failed', why: string): Deny {
  return refusal(
    SqlState.ProgramLimitExceeded,
    reason,
    `statement refused by pgwarden: it could not be decided (${why}), so it was not run`,
    'simplify or shorten the statement',
  );
}

/**
 * The session view a worker decides with: its fields copied by name (the session's object may carry more than a
 * worker can be sent), every field of SessionView present, so a field added to the type fails to compile here
 * instead of silently going missing on the worker and giving long statements a different decision.
 */
function workerView(v: SessionView): { [K in keyof Required<SessionView>]: SessionView[K] } {
  return {
    role: v.role,
    preparedNames: v.preparedNames,
    cursorNames: v.cursorNames,
    holdCursorNames: v.holdCursorNames,
    backendPid: v.backendPid,
    tempObjects: v.tempObjects,
    deferTemporary: v.deferTemporary,
    deferTypes: v.deferTypes,
  };
}

export class DecidePool {
  private readonly opts: Required<Omit<DecidePoolOptions, 'parserLimits'>> & { parserLimits: ParserLimits };
  private readonly slots = new Set<Slot>();
  private readonly queue: Job[] = [];
  private nextJobId = 1;
  private readonly catalogIds = new WeakMap<CatalogSnapshot, number>();
  private nextCatalogId = 1;
  private closed = false;
  readonly stats: Omit<DecidePoolStats, 'running' | 'queued' | 'workers'> = {
    decided: 0,
    refusedBusy: 0,
    timedOut: 0,
    workerFailures: 0,
    workersStarted: 0,
  };

  constructor(opts: DecidePoolOptions = {}) {
    this.opts = {
      size: opts.size ?? DECIDE_POOL_DEFAULTS.size,
      maxQueue: opts.maxQueue ?? DECIDE_POOL_DEFAULTS.maxQueue,
      timeoutMs: opts.timeoutMs ?? DECIDE_POOL_DEFAULTS.timeoutMs,
      queueTimeoutMs: opts.queueTimeoutMs ?? DECIDE_POOL_DEFAULTS.queueTimeoutMs,
      idleMs: opts.idleMs ?? DECIDE_POOL_DEFAULTS.idleMs,
      recycleAfterTextBytes: opts.recycleAfterTextBytes ?? DECIDE_POOL_DEFAULTS.recycleAfterTextBytes,
      recycleAfterGrowthBytes: opts.recycleAfterGrowthBytes ?? DECIDE_POOL_DEFAULTS.recycleAfterGrowthBytes,
      maxHeapMb: opts.maxHeapMb ?? DECIDE_POOL_DEFAULTS.maxHeapMb,
      parserLimits: opts.parserLimits ?? { ...DEFAULT_PARSER_LIMITS },
    };
    if (!Number.isInteger(this.opts.size) || this.opts.size < 1)
      throw new TypeError('DecidePool size must be a positive integer');
    // A job reaches a starting worker through the queue, so a pool without one could never start a worker.
    if (!Number.isInteger(this.opts.maxQueue) || this.opts.maxQueue < 1)
      throw new TypeError('DecidePool maxQueue must be a positive integer');
  }

  /** Current counters and occupancy. */
  snapshot(): DecidePoolStats {
    let running = 0;
    for (const s of this.slots) if (s.job !== undefined) running++;
    return { ...this.stats, running, queued: this.queue.length, workers: this.slots.size };
  }

  /** Decides `req` on a worker. Never rejects: every failure is a refusal of this statement. */
  async decide(req: DecideRequest): Promise<PoolAnswer> {
    const r = await this.submit({ type: 'decide', req });
    return r.ok ? { ok: true, facts: r.value as EvaluationFacts } : r;
  }

  /** The server analysis plan of an allowed text (policy/server-plan.ts), made on a worker. Never rejects. */
  async plan(text: string, paramTypes: readonly number[]): Promise<PlanAnswer> {
    const r = await this.submit({ type: 'plan', text, paramTypes });
    return r.ok ? { ok: true, plan: r.value as AnalysisPlan } : r;
  }

  private submit(req: Request): Promise<Reply> {
    if (this.closed) return Promise.resolve({ ok: false, decision: busyRefusal('pgwarden is shutting down') });
    return new Promise<Reply>((resolve) => {
      const job: Job = { id: this.nextJobId++, req, resolve, queuedAt: Date.now(), queueTimer: undefined };
      const idle = this.idleSlot();
      if (idle !== undefined) {
        this.run(idle, job);
        return;
      }
      if (this.queue.length >= this.opts.maxQueue) {
        this.stats.refusedBusy++;
        resolve({ ok: false, decision: busyRefusal(`${this.queue.length} waiting`) });
        return;
      }
      job.queueTimer = setTimeout(() => {
        const i = this.queue.indexOf(job);
        if (i < 0) return;
        this.queue.splice(i, 1);
        this.stats.refusedBusy++;
        resolve({ ok: false, decision: busyRefusal(`no worker free within ${this.opts.queueTimeoutMs} ms`) });
      }, this.opts.queueTimeoutMs);
      job.queueTimer.unref();
      this.queue.push(job);
      this.grow();
    });
  }

  /** Ends every worker; waiting and running statements are refused. */
  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.queue.splice(0)) {
      clearTimeout(job.queueTimer);
      job.resolve({ ok: false, decision: busyRefusal('pgwarden is shutting down') });
    }
    const ending: Promise<number>[] = [];
    for (const s of [...this.slots]) {
      const job = s.job;
      this.drop(s);
      job?.resolve({ ok: false, decision: busyRefusal('pgwarden is shutting down') });
      ending.push(s.worker.terminate());
    }
    await Promise.allSettled(ending);
  }

  /** For tests: makes every busy worker exit as a crash would (its statement is refused, the worker replaced). */
  async crashBusyWorkersForTest(): Promise<void> {
    const busy = [...this.slots].filter((s) => s.job !== undefined);
    await Promise.all(busy.map((s) => s.worker.terminate()));
  }

  private idleSlot(): Slot | undefined {
    for (const s of this.slots) if (s.ready && s.job === undefined && !s.gone) return s;
    return undefined;
  }

  /** Starts a worker when jobs wait and the pool is not full. */
  private grow(): void {
    if (this.closed || this.queue.length === 0) return;
    let starting = 0;
    for (const s of this.slots) if (!s.ready) starting++;
    // One worker starting per waiting job at most, within the size.
    if (this.slots.size >= this.opts.size || starting >= this.queue.length) return;
    this.spawn();
  }

  private spawn(): void {
    const data: DecideWorkerData = { parserLimits: this.opts.parserLimits };
    const worker = new Worker(BOOTSTRAP, {
      workerData: data,
      resourceLimits: { maxOldGenerationSizeMb: this.opts.maxHeapMb },
      stdout: false,
      stderr: false,
    });
    worker.unref();
    this.stats.workersStarted++;
    const slot: Slot = {
      worker,
      ready: false,
      job: undefined,
      catalogId: -1,
      timer: undefined,
      idleTimer: undefined,
      retire: false,
      gone: false,
    };
    this.slots.add(slot);
    worker.on('message', (m: WorkerReply) => this.onMessage(slot, m));
    worker.on('error', (err) => this.onFailure(slot, errorMessage(err)));
    worker.on('exit', (code) => this.onFailure(slot, `worker exited with code ${code}`));
  }

  private onMessage(slot: Slot, m: WorkerReply): void {
    if (slot.gone) return;
    if (m.type === 'ready') {
      slot.ready = true;
      this.next(slot);
      return;
    }
    const job = slot.job;
    if (job === undefined || m.id !== job.id) return;
    if (m.type === 'needCatalog') {
      slot.catalogId = -1;
      this.send(slot, job);
      return;
    }
    clearTimeout(slot.timer);
    slot.job = undefined;
    if (m.type === 'done' || m.type === 'planned') {
      this.stats.decided++;
      if (m.grownBytes > this.opts.recycleAfterGrowthBytes || m.wasmInput >= this.opts.recycleAfterTextBytes)
        slot.retire = true;
      if (
        m.type === 'done' &&
        !m.facts.decision.allow &&
        (m.facts.decision.reason === 'parser_trap' || m.facts.decision.reason === 'parser_unavailable')
      )
        slot.retire = true;
      job.resolve({ ok: true, value: m.type === 'done' ? m.facts : m.plan });
    } else {
      this.stats.workerFailures++;
      job.resolve({ ok: false, decision: failedRefusal('decide_worker_failed', 'the decision could not be returned') });
    }
    if (slot.retire) {
      this.end(slot);
      this.grow();
      return;
    }
    this.next(slot);
  }

  /** A worker errored or exited: its statement is refused, the worker forgotten, and another started if jobs wait. */
  private onFailure(slot: Slot, why: string): void {
    if (slot.gone) return;
    const job = slot.job;
    this.drop(slot);
    if (job !== undefined) {
      this.stats.workerFailures++;
      job.resolve({
        ok: false,
        decision: failedRefusal(
          'decide_worker_failed',
          /memory/i.test(why) ? 'deciding it needed too much memory' : 'the decision failed',
        ),
      });
    } else if (!slot.ready && this.queue.length > 0 && !this.closed) {
      // A worker that cannot even start: refuse what waits rather than retry in a loop.
      this.stats.workerFailures++;
      for (const j of this.queue.splice(0)) {
        clearTimeout(j.queueTimer);
        j.resolve({ ok: false, decision: failedRefusal('decide_worker_failed', 'no decide worker could be started') });
      }
      return;
    }
    this.grow();
  }

  private drop(slot: Slot): void {
    slot.gone = true;
    slot.job = undefined;
    clearTimeout(slot.timer);
    clearTimeout(slot.idleTimer);
    this.slots.delete(slot);
  }

  /** Forgets the slot and ends its thread (retired after a long text, idle too long, or timed out). */
  private end(slot: Slot): void {
    this.drop(slot);
    void slot.worker.terminate();
  }

  /** Gives the slot the next waiting job, or lets it idle (and end after idleMs). */
  private next(slot: Slot): void {
    const job = this.queue.shift();
    if (job === undefined) {
      clearTimeout(slot.idleTimer);
      slot.idleTimer = setTimeout(() => {
        if (slot.job !== undefined || slot.gone) return;
        this.end(slot);
      }, this.opts.idleMs);
      slot.idleTimer.unref();
      return;
    }
    clearTimeout(job.queueTimer);
    this.run(slot, job);
  }

  private run(slot: Slot, job: Job): void {
    clearTimeout(slot.idleTimer);
    slot.job = job;
    // Measured (bench/hostile.ts): replacing the worker after every long text, even one refused before it reached WASM,
    // leaves less memory behind than keeping it for the next one; each thread's malloc arena keeps what it freed.
    if ((job.req.type === 'decide' ? job.req.req.sql : job.req.text).length >= this.opts.recycleAfterTextBytes)
      slot.retire = true;
    slot.timer = setTimeout(() => {
      if (slot.job !== job) return;
      this.stats.timedOut++;
      this.end(slot);
      job.resolve({
        ok: false,
        decision: failedRefusal('decide_timeout', `it took longer than ${this.opts.timeoutMs} ms`),
      });
      this.grow();
    }, this.opts.timeoutMs);
    slot.timer.unref();
    this.send(slot, job);
  }

  private send(slot: Slot, job: Job): void {
    let msg: DecideJob | PlanJob;
    let catalogId = slot.catalogId;
    if (job.req.type === 'plan') {
      msg = { type: 'plan', id: job.id, text: job.req.text, paramTypes: job.req.paramTypes };
    } else {
      const { req } = job.req;
      let id = this.catalogIds.get(req.catalog);
      if (id === undefined) {
        id = this.nextCatalogId++;
        this.catalogIds.set(req.catalog, id);
      }
      catalogId = id;
      msg = {
        type: 'job',
        id: job.id,
        sql: req.sql,
        mode: req.mode,
        view: workerView(req.view),
        policyVersion: req.policyVersion,
        catalogId: id,
        catalog: slot.catalogId === id ? undefined : req.catalog,
      };
    }
    try {
      slot.worker.postMessage(msg);
      slot.catalogId = catalogId;
    } catch {
      // Something in the request cannot be copied to a worker: refuse it rather than decide it some other way.
      clearTimeout(slot.timer);
      slot.job = undefined;
      this.stats.workerFailures++;
      job.resolve({
        ok: false,
        decision: failedRefusal('decide_worker_failed', 'the statement could not be handed to a worker'),
      });
      this.next(slot);
    }
  }
}
