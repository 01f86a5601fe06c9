// The current policy and catalog as one swappable reference: load, hot reload (file watch, SIGHUP, API), versions and change events.
import path from 'node:path';
import { Coalescer } from '../lib/coalesce.ts';
import { FileWatcher, readSettled } from '../lib/watch.ts';
import {
  compilePolicy,
  formatIssue,
  loadPolicyBytes,
  loadPolicyFile,
  policyWarnings,
  type PolicyIssue,
} from './load.ts';
import type { CatalogSnapshot, CompiledPolicy, RolePolicy } from './types.ts';
import { errorMessage } from '../lib/error-message.ts';

export type StoreLogLevel = 'debug' | 'info' | 'warn' | 'error';
export type StoreLog = (level: StoreLogLevel, msg: string, fields?: object) => void;
export type ReloadReason = 'file' | 'signal' | 'api';

export interface PolicyStoreOptions {
  file: string;
  /** Reads the upstream catalog for a freshly compiled policy (which relations it mentions). */
  loadCatalog: (policy: CompiledPolicy) => Promise<CatalogSnapshot>;
  log?: StoreLog;
  /** Watch the file (and its directory, for editors that replace by rename) and reload on change. Default true. */
  watch?: boolean;
  /** Quiet time after the last file event before reloading. Default 200ms. */
  debounceMs?: number;
  /**
   * A reload reads the file until two reads this far apart agree (size, mtime, bytes), so a file rewritten in place
   * is not applied half-written. Default 500ms.
   */
  settleMs?: number;
  /** A file still changing after this long is not applied (the reload fails; the next change tries again). Default 10s. */
  settleMaxMs?: number;
  /** Optional defense-in-depth check run after each successful load; each string is logged as a warning. */
  checkPrivileges?: (policy: CompiledPolicy, catalog: CatalogSnapshot) => Promise<string[]>;
}

/** One consistent pair: a session reads `store.current` once per batch. */
export interface PolicyState {
  readonly policy: CompiledPolicy;
  readonly catalog: CatalogSnapshot;
}

export type ReloadResult = { ok: true; version: number; changed: boolean } | { ok: false; issues: PolicyIssue[] };

export interface PolicyChange {
  reason: ReloadReason | 'catalog';
  version: number;
  previousVersion: number;
  policy: CompiledPolicy;
  catalog: CatalogSnapshot;
  /** Roles in the new policy only, in the old one only, and in both but with different settings. */
  addedRoles: string[];
  removedRoles: string[];
  changedRoles: string[];
}

export type ChangeListener = (change: PolicyChange) => void;

/** Thrown by PolicyStore.open when the first load fails; carries every issue. */
export class PolicyLoadError extends Error {
  readonly code = 'ERR_POLICY_INVALID';
  readonly issues: PolicyIssue[];
  constructor(file: string, issues: PolicyIssue[], cause?: unknown) {
    super(
      `policy ${file} is invalid:\n${issues.map((i) => '  ' + formatIssue(i, file)).join('\n')}`,
      cause === undefined ? undefined : { cause },
    );
    this.name = 'PolicyLoadError';
    this.issues = issues;
  }
}

/** A stable text form of a role, so reloads can tell which roles actually changed. */
function roleFingerprint(r: RolePolicy): string {
  return JSON.stringify(r, (_k, v: unknown) => {
    if (v instanceof Map) return [...v].sort(([a], [b]) => (String(a) < String(b) ? -1 : 1));
    if (v instanceof Set) return [...v].sort();
    return v === undefined ? null : v;
  });
}

function diffRoles(
  before: CompiledPolicy,
  after: CompiledPolicy,
): Pick<PolicyChange, 'addedRoles' | 'removedRoles' | 'changedRoles'> {
  const addedRoles: string[] = [];
  const removedRoles: string[] = [];
  const changedRoles: string[] = [];
  for (const [name, role] of after.roles) {
    const old = before.roles.get(name);
    if (!old) addedRoles.push(name);
    else if (roleFingerprint(old) !== roleFingerprint(role)) changedRoles.push(name);
  }
  for (const name of before.roles.keys()) if (!after.roles.has(name)) removedRoles.push(name);
  return { addedRoles, removedRoles, changedRoles };
}

export class PolicyStore {
  readonly file: string;
  #state: PolicyState;
  #opts: PolicyStoreOptions;
  #log: StoreLog;
  /** Tail of the reload queue: every reload and catalog refresh runs after the previous one settles. */
  #queue: Promise<unknown> = Promise.resolve();
  #listeners = new Set<ChangeListener>();
  #watcher: FileWatcher | undefined;
  /** A burst of reload requests (signals, file events) is one reload in flight plus at most one pending. */
  readonly #reloads = new Coalescer<ReloadResult>(() => {
    const reason = this.#requested ?? 'api';
    this.#requested = undefined;
    return this.#enqueue(() => this.#reload(reason));
  });
  /** The reason of the reload that has not started yet; a signal or api request outranks a file event. */
  #requested: ReloadReason | undefined;

  private constructor(opts: PolicyStoreOptions, state: PolicyState) {
    this.file = path.resolve(opts.file);
    this.#opts = opts;
    this.#log = opts.log ?? (() => {});
    this.#state = state;
  }

  /** Loads, validates and compiles the file and reads the catalog; throws PolicyLoadError if the file is invalid. */
  static async open(opts: PolicyStoreOptions): Promise<PolicyStore> {
    const started = Date.now();
    const loaded = await loadPolicyFile(opts.file);
    if (!loaded.ok) throw new PolicyLoadError(opts.file, loaded.issues);
    const policy = compilePolicy(loaded.doc, 1, loaded.digest);
    // No last good catalog to fall back on at startup: a catalog failure fails the open.
    const catalog = await opts.loadCatalog(policy);
    const store = new PolicyStore(opts, Object.freeze({ policy, catalog }));
    store.#log('info', 'policy loaded', {
      file: store.file,
      version: 1,
      reason: 'startup',
      digest: policy.digest.slice(0, 12),
      roles: [...policy.roles.keys()],
      ms: Date.now() - started,
    });
    await store.#checkPrivileges(store.#state);
    if (opts.watch ?? true) {
      store.#watcher = new FileWatcher(store.file, {
        debounceMs: opts.debounceMs ?? 200,
        persistent: true,
        what: 'policy',
        warn: (msg, fields) => store.#log('warn', msg, fields),
        onChange: () =>
          store
            .reload('file')
            .catch((err) => store.#log('error', 'policy reload crashed', { error: errorMessage(err) })),
      });
    }
    return store;
  }

  /** The current policy and catalog, swapped together. */
  get current(): PolicyState {
    return this.#state;
  }

  /** Bumped on every successful reload and catalog refresh; equals `current.policy.version`. */
  get version(): number {
    return this.#state.policy.version;
  }

  /**
   * Re-reads the file once it has settled; an invalid file is logged and the current policy stays. Requests made while
   * a reload runs share one later reload (so it reads what changed meanwhile); serialized with catalog refreshes.
   */
  reload(reason: ReloadReason): Promise<ReloadResult> {
    if (this.#requested === undefined || this.#requested === 'file') this.#requested = reason;
    return this.#reloads.run();
  }

  /** Re-reads the catalog for the current policy (after DDL upstream); bumps the version so cached decisions expire, unless it read the same catalog. */
  refreshCatalog(): Promise<ReloadResult> {
    return this.#enqueue(() => this.#refreshCatalog());
  }

  /** Calls `listener` after every successful swap; returns an unsubscribe function. */
  onChange(listener: ChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Stops watching; a reload already running completes. Safe to call twice. */
  close(): void {
    this.#watcher?.close();
    this.#watcher = undefined;
    this.#listeners.clear();
  }

  #enqueue<T>(job: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(job, job);
    // The queue only orders jobs; each caller sees its own job's result or error.
    this.#queue = run.catch(() => {});
    return run;
  }

  async #reload(reason: ReloadReason): Promise<ReloadResult> {
    const started = Date.now();
    const before = this.#state;
    const loaded = await this.#loadSettled();
    if (!loaded.ok) {
      this.#log('error', 'policy reload failed; keeping the current policy', {
        file: this.file,
        reason,
        version: before.policy.version,
        issues: loaded.issues.map((i) => formatIssue(i, this.file)),
      });
      return { ok: false, issues: loaded.issues };
    }
    // Editors fire several events per save; an unchanged file is not a new policy (and must not flush caches).
    if (reason === 'file' && loaded.digest === before.policy.digest) {
      this.#log('debug', 'policy file unchanged', { file: this.file, reason, version: before.policy.version });
      return { ok: true, version: before.policy.version, changed: false };
    }

    const version = before.policy.version + 1;
    let policy: CompiledPolicy;
    try {
      policy = compilePolicy(loaded.doc, version, loaded.digest);
    } catch (err) {
      // Validation should make this unreachable; if not, it is still a failed reload, not a crash.
      const issues = [{ path: '', message: `could not be compiled: ${errorMessage(err)}` }];
      this.#log('error', 'policy reload failed; keeping the current policy', { file: this.file, reason, issues });
      return { ok: false, issues };
    }
    let catalog = before.catalog;
    let catalogStale = false;
    try {
      catalog = await this.#opts.loadCatalog(policy);
    } catch (err) {
      // Still apply the new policy: a revocation must not wait for the database. With the old catalog,
      // relations it has never seen are unknown to the engine, which denies them (fail closed).
      catalogStale = true;
      this.#log('warn', 'catalog reload failed; applying the new policy with the previous catalog', {
        reason,
        error: errorMessage(err),
      });
    }
    const next: PolicyState = Object.freeze({ policy, catalog });
    const diff = diffRoles(before.policy, policy);
    this.#swap(next, reason, before, diff);
    this.#log('info', 'policy reloaded', {
      file: this.file,
      reason,
      version,
      previousVersion: before.policy.version,
      digest: policy.digest.slice(0, 12),
      ...diff,
      catalogStale,
      ms: Date.now() - started,
    });
    await this.#checkPrivileges(next);
    return { ok: true, version, changed: true };
  }

  /** loadPolicyFile of a settled file: the bytes parsed are the ones that stayed the same across two reads. */
  async #loadSettled(): ReturnType<typeof loadPolicyFile> {
    const settleMs = this.#opts.settleMs ?? 500;
    const settled = await readSettled(this.file, settleMs, this.#opts.settleMaxMs ?? 10_000);
    // Missing or unreadable: loadPolicyFile says so in its own words.
    if (!settled.ok && settled.reason !== 'unsettled') return await loadPolicyFile(this.file);
    if (!settled.ok) return { ok: false, source: this.file, issues: [{ path: '', message: settled.message }] };
    return loadPolicyBytes(this.file, settled.data);
  }

  async #refreshCatalog(): Promise<ReloadResult> {
    const started = Date.now();
    const before = this.#state;
    let catalog: CatalogSnapshot;
    try {
      catalog = await this.#opts.loadCatalog(before.policy);
    } catch (err) {
      const issues = [{ path: 'catalog', message: `could not be read: ${errorMessage(err)}` }];
      this.#log('error', 'catalog refresh failed; keeping the current catalog', { error: errorMessage(err) });
      return { ok: false, issues };
    }
    // The same catalog as before: nothing to swap. A new version would empty every session's decision cache, make
    // every session decide its prepared statements again and write an audit record, for nothing; refreshes that read
    // the same catalog are what a client asking about names that do not exist causes (42P01 confirmations, one per
    // CatalogFollower interval), so they must cost no more than the read.
    if (catalog.digest !== undefined && catalog.digest === before.catalog.digest) {
      this.#log('debug', 'catalog unchanged', { version: before.policy.version, ms: Date.now() - started });
      return { ok: true, version: before.policy.version, changed: false };
    }
    const version = before.policy.version + 1;
    // Same roles, new version: decisions cached against the old catalog must not be reused.
    const policy: CompiledPolicy = Object.freeze({ ...before.policy, version });
    this.#swap(Object.freeze({ policy, catalog }), 'catalog', before, {
      addedRoles: [],
      removedRoles: [],
      changedRoles: [],
    });
    this.#log('info', 'catalog refreshed', {
      version,
      relations: catalog.relations.size,
      functions: catalog.functions.size,
      ms: Date.now() - started,
    });
    return { ok: true, version, changed: true };
  }

  #swap(
    next: PolicyState,
    reason: PolicyChange['reason'],
    before: PolicyState,
    diff: Pick<PolicyChange, 'addedRoles' | 'removedRoles' | 'changedRoles'>,
  ): void {
    // One assignment: readers see either the old pair or the new one, never a mix.
    this.#state = next;
    const change: PolicyChange = {
      reason,
      version: next.policy.version,
      previousVersion: before.policy.version,
      policy: next.policy,
      catalog: next.catalog,
      ...diff,
    };
    for (const listener of [...this.#listeners]) {
      try {
        listener(change);
      } catch (err) {
        this.#log('error', 'policy change listener failed', { error: errorMessage(err) });
      }
    }
  }

  async #checkPrivileges(state: PolicyState): Promise<void> {
    for (const w of policyWarnings(state.policy)) this.#log('warn', w, { check: 'policy' });
    if (!this.#opts.checkPrivileges) return;
    try {
      for (const w of await this.#opts.checkPrivileges(state.policy, state.catalog))
        this.#log('warn', w, { check: 'upstream_privileges' });
    } catch (err) {
      this.#log('warn', 'could not check upstream privileges', { error: errorMessage(err) });
    }
  }
}
