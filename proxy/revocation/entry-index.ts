// The in-memory revocation index: Maps per key kind (jti, sub, agent) from identifier to a slot whose expiry, reason and read generation live in flat arrays, so a million entries cost about a hundred bytes each.
//
// Why slots and not one object per entry: an object per revocation (plus the arrays the old index kept per key)
// cost about 1.8 KB per entry; here an entry is its key string, one Map entry and three array cells. Several
// revocations of the same identifier merge into one slot that stays in force as long as the longest of them (its
// reason is shown): a key is revoked exactly as long as any entry revokes it. A full re-read of a source marks every
// slot it sees with a new generation and then sweeps the unmarked ones (removed from the source) and the expired
// ones, in chunks that yield to the event loop, while the index keeps answering.
import type { Identity } from '../auth/jwt.ts';

export const KEYS = ['jti', 'sub', 'agent'] as const;
export type RevocationKey = (typeof KEYS)[number];

export interface RevocationEntry {
  /** Exactly one of jti, sub, agent (a table row made without the CHECK may name several; each revokes). */
  jti?: string;
  sub?: string;
  agent?: string;
  /** Shown to the client in the refusal ("token has been revoked: <reason>") and written to the audit trail. */
  reason?: string;
  /** ISO 8601; the entry is ignored from then on. */
  expiresAt?: string;
}

/** Entries listed by one change (added or removed); counts beyond this are given as numbers only. */
export const MAX_LISTED_CHANGES = 1000;

/** How many slots a chunked pass (sweep, diff) handles before it yields to the event loop. */
const CHUNK = 20_000;

/**
 * Maps per key kind. A Map grows by rehashing every entry at once: one Map of a million entries pauses the event loop
 * for tens of milliseconds when it doubles; 64 shards of it pause for a 64th of that.
 */
const SHARDS = 64;

/** The shard of an identifier: its last two characters, cheap and spread for random or sequential identifiers. */
function shardOf(v: string): number {
  const n = v.length;
  return n === 0 ? 0 : (v.charCodeAt(n - 1) * 31 + (n > 1 ? v.charCodeAt(n - 2) : 0)) & (SHARDS - 1);
}

const newShards = (): Map<string, number>[] => Array.from({ length: SHARDS }, () => new Map<string, number>());

/** Distinct reasons kept shared (one string per distinct reason); beyond this each slot keeps its own copy. */
const MAX_INTERNED_REASONS = 10_000;

export const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A bounded list of changed entries plus the true count. */
export interface ChangeList {
  listed: RevocationEntry[];
  count: number;
}

export const emptyChangeList = (): ChangeList => ({ listed: [], count: 0 });

/** Counts `e` in `list`, listing it while fewer than MAX_LISTED_CHANGES are listed. */
export function noteChange(list: ChangeList, e: RevocationEntry): void {
  list.count++;
  if (list.listed.length < MAX_LISTED_CHANGES) list.listed.push(e);
}

export class RevocationIndex {
  readonly #maps: Record<RevocationKey, Map<string, number>[]> = {
    jti: newShards(),
    sub: newShards(),
    agent: newShards(),
  };
  #count = 0;
  #expires: Float64Array;
  #gens: Uint32Array;
  #reasons: (string | undefined)[] = [];
  #free: number[] = [];
  #highWater = 0;
  #gen = 0;
  #marking = false;
  #interned = new Map<string, string>();

  constructor(entries: Iterable<RevocationEntry> = []) {
    this.#expires = new Float64Array(1024);
    this.#gens = new Uint32Array(1024);
    for (const e of entries) this.add(e);
  }

  /** Identifiers revoked (one per key kind and value; expired ones count until swept). */
  get size(): number {
    return this.#count;
  }

  /** Every entry, one per identifier (built on demand: O(size), for tests, diagnostics and small lists). */
  get entries(): RevocationEntry[] {
    const out: RevocationEntry[] = [];
    for (const k of KEYS)
      for (const map of this.#maps[k]) for (const [v, slot] of map) out.push(this.#entry(k, v, slot));
    return out;
  }

  /**
   * The revocation in force for a token, if any. A token exchanged from others (docs/issuance.md) is revoked with them:
   * a `jti` entry also matches the jtis of the tokens it was exchanged from (`parentJtis`), an `agent` entry also
   * matches every actor of its `act` chain (an agent that obtained it before another actor took over).
   */
  match(
    id: Pick<Identity, 'jti' | 'sub' | 'agent' | 'parentJtis' | 'act'>,
    now = Date.now(),
  ): { reason: string } | undefined {
    for (const k of KEYS) {
      const hit = this.#lookup(k, id[k], now);
      if (hit !== undefined) return hit;
      const more = k === 'jti' ? id.parentJtis : k === 'agent' ? id.act : undefined;
      if (more === undefined) continue;
      for (const v of more) {
        const m = this.#lookup(k, v, now);
        if (m !== undefined) return m;
      }
    }
    return undefined;
  }

  #lookup(k: RevocationKey, v: string | undefined, now: number): { reason: string } | undefined {
    if (v === undefined) return undefined;
    const slot = (this.#maps[k][shardOf(v)] as Map<string, number>).get(v);
    if (slot === undefined || (this.#expires[slot] as number) <= now) return undefined;
    return { reason: this.#reasons[slot] ?? `${k} revoked` };
  }

  /** Adds an entry (each key it names); returns whether anything is new or now revokes differently. */
  add(e: RevocationEntry): boolean {
    const exp = e.expiresAt === undefined ? Number.POSITIVE_INFINITY : Date.parse(e.expiresAt);
    let changed = false;
    for (const k of KEYS) {
      const v = e[k];
      if (v !== undefined && this.addKey(k, v, exp, e.reason)) changed = true;
    }
    return changed;
  }

  /**
   * Adds one identifier revoked until `expiresMs` (Infinity: never). Outside a full read it merges with what is there
   * (the later expiry wins); during one (`beginFullRead`) the first sighting of a key replaces the old values, later
   * sightings merge. Returns whether anything changed.
   */
  addKey(kind: RevocationKey, value: string, expiresMs: number, reason: string | undefined): boolean {
    const map = this.#maps[kind][shardOf(value)] as Map<string, number>;
    const exp = Number.isNaN(expiresMs) ? Number.POSITIVE_INFINITY : expiresMs;
    const r = reason === undefined ? undefined : this.#intern(reason);
    let slot = map.get(value);
    if (slot === undefined) {
      slot = this.#allocate();
      map.set(value, slot);
      this.#count++;
      this.#expires[slot] = exp;
      this.#reasons[slot] = r;
      this.#gens[slot] = this.#gen;
      return true;
    }
    const oldExp = this.#expires[slot] as number;
    const oldReason = this.#reasons[slot];
    if (this.#marking && this.#gens[slot] !== this.#gen) {
      // First sighting in this full read: the source's current values replace what an earlier read left.
      this.#gens[slot] = this.#gen;
      this.#expires[slot] = exp;
      this.#reasons[slot] = r;
      return oldExp !== exp || oldReason !== r;
    }
    if (exp > oldExp || (exp === oldExp && oldReason === undefined && r !== undefined)) {
      this.#expires[slot] = exp;
      this.#reasons[slot] = r;
      return true;
    }
    return false;
  }

  /**
   * Starts a full read: every key seen until `sweep` is kept, every key not seen is removed by it. Returns the read's
   * generation; a newer full read supersedes an older one still running (a connection lost and re-made), whose
   * sweep then removes nothing it did not see.
   */
  beginFullRead(): number {
    this.#gen = (this.#gen + 1) >>> 0;
    this.#marking = true;
    return this.#gen;
  }

  /** Ends a full read without sweeping (it failed midway): keys not seen stay, nothing is lost. */
  abandonFullRead(gen: number): void {
    if (gen === this.#gen) this.#marking = false;
  }

  /**
   * Removes keys the full read `gen` did not see (when it is the current one) and keys expired at `now`, in chunks
   * that yield to the event loop. Returns what was removed, expired keys not included (they had stopped matching).
   */
  async sweep(now = Date.now(), gen?: number): Promise<ChangeList> {
    const sweepUnseen = this.#marking && gen === this.#gen;
    if (gen === this.#gen) this.#marking = false;
    const current = this.#gen;
    const removed = emptyChangeList();
    let n = 0;
    for (const k of KEYS) {
      for (const map of this.#maps[k])
        for (const [v, slot] of map) {
          const unseen = sweepUnseen && this.#gens[slot] !== current;
          const expired = (this.#expires[slot] as number) <= now;
          if (unseen || expired) {
            if (unseen && !expired) noteChange(removed, this.#entry(k, v, slot));
            map.delete(v);
            this.#count--;
            this.#release(slot);
          }
          if (++n % CHUNK === 0) await yieldToLoop();
        }
    }
    if (sweepUnseen) this.#reintern();
    return removed;
  }

  /**
   * Adds what `other` revokes without removing or shortening anything here (the later expiry wins, as in addKey): how
   * a possibly incomplete read's additions are applied early. Chunked like sweep; returns what is new or revokes longer.
   */
  async merge(other: RevocationIndex): Promise<ChangeList> {
    const added = emptyChangeList();
    let n = 0;
    for (const k of KEYS) {
      for (const shard of other.#maps[k])
        for (const [v, slot] of shard) {
          if (this.addKey(k, v, other.#expires[slot] as number, other.#reasons[slot]))
            noteChange(added, other.#entry(k, v, slot));
          if (++n % CHUNK === 0) await yieldToLoop();
        }
    }
    return added;
  }

  /** What `next` holds that this index does not (or holds differently), and the reverse; chunked like sweep. */
  async diff(next: RevocationIndex): Promise<{ added: ChangeList; removed: ChangeList }> {
    const added = emptyChangeList();
    const removed = emptyChangeList();
    let n = 0;
    for (const k of KEYS) {
      for (const shard of next.#maps[k])
        for (const [v, slot] of shard) {
          const mine = (this.#maps[k][shardOf(v)] as Map<string, number>).get(v);
          if (
            mine === undefined ||
            this.#expires[mine] !== next.#expires[slot] ||
            this.#reasons[mine] !== next.#reasons[slot]
          )
            noteChange(added, next.#entry(k, v, slot));
          if (++n % CHUNK === 0) await yieldToLoop();
        }
      for (const shard of this.#maps[k])
        for (const [v, slot] of shard) {
          const theirs = (next.#maps[k][shardOf(v)] as Map<string, number>).get(v);
          if (
            theirs === undefined ||
            this.#expires[slot] !== next.#expires[theirs] ||
            this.#reasons[slot] !== next.#reasons[theirs]
          )
            noteChange(removed, this.#entry(k, v, slot));
          if (++n % CHUNK === 0) await yieldToLoop();
        }
    }
    return { added, removed };
  }

  #entry(k: RevocationKey, v: string, slot: number): RevocationEntry {
    const e: RevocationEntry = { [k]: v };
    const reason = this.#reasons[slot];
    if (reason !== undefined) e.reason = reason;
    const exp = this.#expires[slot] as number;
    if (Number.isFinite(exp)) e.expiresAt = new Date(exp).toISOString();
    return e;
  }

  #allocate(): number {
    const reused = this.#free.pop();
    if (reused !== undefined) return reused;
    const slot = this.#highWater++;
    if (slot >= this.#expires.length) {
      const expires = new Float64Array(this.#expires.length * 2);
      expires.set(this.#expires);
      this.#expires = expires;
      const gens = new Uint32Array(this.#gens.length * 2);
      gens.set(this.#gens);
      this.#gens = gens;
    }
    return slot;
  }

  #release(slot: number): void {
    this.#reasons[slot] = undefined;
    this.#free.push(slot);
  }

  #intern(reason: string): string {
    const known = this.#interned.get(reason);
    if (known !== undefined) return known;
    if (this.#interned.size < MAX_INTERNED_REASONS) this.#interned.set(reason, reason);
    return reason;
  }

  /** After a full read: forget interned reasons no slot uses any more (the table is otherwise only ever added to). */
  #reintern(): void {
    if (this.#interned.size === 0) return;
    const used = new Set<string>();
    for (const r of this.#reasons) if (r !== undefined && this.#interned.has(r)) used.add(r);
    for (const r of this.#interned.keys()) if (!used.has(r)) this.#interned.delete(r);
  }
}
