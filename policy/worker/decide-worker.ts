// One decide worker thread: parses and decides large statements with the same evaluate() the main thread runs, so its answer is the main thread's.
//
// Messages (proxy/session/decide-pool.ts is the other side): the pool sends `{ type: 'job', … }` with the statement, the
// session view and the catalog (the catalog only when this worker has not seen that snapshot yet, by id); the worker
// answers `{ type: 'done', id, facts }` or `{ type: 'failed', id, message }`. `{ type: 'plan', … }` asks for the server
// analysis plan of an allowed text (`{ type: 'planned', id, plan }`). `{ type: 'ready' }` once the parser is loaded.
import { parentPort, workerData } from 'node:worker_threads';
import { initParser, wasmInputHighWaterMark, type ParserLimits } from '../parser.ts';
import { evaluateWithFacts } from '../evaluate.ts';
import { planServerAnalysis, type AnalysisPlan } from '../server-plan.ts';
import type { CatalogSnapshot, SessionView } from '../types.ts';
import { errorMessage } from '../../lib/error-message.ts';

/** The texts the server must analyse for an allowed statement (policy/server-plan.ts parses the text again). */
export interface PlanJob {
  type: 'plan';
  id: number;
  text: string;
  paramTypes: readonly number[];
}

export interface DecideJob {
  type: 'job';
  id: number;
  sql: string;
  mode: 'simple' | 'parse';
  view: SessionView;
  policyVersion: number;
  catalogId: number;
  /** Present when the worker may not hold snapshot `catalogId` yet. */
  catalog: CatalogSnapshot | undefined;
}

export type WorkerReply =
  | { type: 'ready' }
  | { type: 'done'; id: number; facts: ReturnType<typeof evaluateWithFacts>; grownBytes: number; wasmInput: number }
  | { type: 'planned'; id: number; plan: AnalysisPlan; grownBytes: number; wasmInput: number }
  | { type: 'failed'; id: number; message: string }
  /** Asked for a catalog it does not hold (the pool sends it again with the snapshot). */
  | { type: 'needCatalog'; id: number };

export interface DecideWorkerData {
  parserLimits: ParserLimits;
  /** The worker thread's nice value (default 10; bootstrap.mjs sets it before anything loads). */
  nice?: number;
}

const port = parentPort;
if (port === null) throw new Error('decide-worker.ts runs only as a worker thread');
const data = workerData as DecideWorkerData;

// One snapshot at a time: the pool always decides against the store's current catalog.
let catalogId = -1;
let catalog: CatalogSnapshot | undefined;

// No spare parser instance: a worker whose parser traps is replaced whole by the pool (a spare would double the
// WASM compile and memory of every worker for nothing).
await initParser(data.parserLimits, { spare: false });

// The WASM parser's memory only ever grows (memory.grow past its initial 128 MiB), and a grown memory counts in this
// isolate's external memory. Each answer says how far it has grown since the worker started, and the pool replaces a
// worker that has grown too much.
const baseExternal = process.memoryUsage().external;
const grown = (): number => Math.max(0, process.memoryUsage().external - baseExternal);

port.on('message', (job: DecideJob | PlanJob) => {
  if (job.type === 'plan') {
    try {
      const plan = planServerAnalysis(job.text, job.paramTypes);
      port.postMessage({
        type: 'planned',
        id: job.id,
        plan,
        grownBytes: grown(),
        wasmInput: wasmInputHighWaterMark(),
      } satisfies WorkerReply);
    } catch (err) {
      port.postMessage({ type: 'failed', id: job.id, message: errorMessage(err) } satisfies WorkerReply);
    }
    return;
  }
  if (job.catalog !== undefined) {
    catalogId = job.catalogId;
    catalog = job.catalog;
  }
  if (catalog === undefined || catalogId !== job.catalogId) {
    port.postMessage({ type: 'needCatalog', id: job.id } satisfies WorkerReply);
    return;
  }
  let reply: WorkerReply;
  try {
    // evaluateWithFacts never throws (an internal failure is a denial), but posting a result that cannot be cloned can.
    const facts = evaluateWithFacts(job.sql, job.mode, job.view, catalog, job.policyVersion);
    reply = { type: 'done', id: job.id, facts, grownBytes: grown(), wasmInput: wasmInputHighWaterMark() };
    port.postMessage(reply);
  } catch (err) {
    port.postMessage({ type: 'failed', id: job.id, message: errorMessage(err) } satisfies WorkerReply);
  }
});
port.postMessage({ type: 'ready' } satisfies WorkerReply);
