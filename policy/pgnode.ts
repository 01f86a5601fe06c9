// Reads PostgreSQL's node text format (nodeToString, as debug_print_parse and pg_node_tree columns print it) into plain objects; any doubt is an error.
//
// The grammar is read.c's: tokens are separated by whitespace, `(` `)` `{` `}` are tokens of their own, a
// backslash makes the next byte ordinary, `<>` is NULL. A node is `{NAME :field value …}`, a list is `(…)`
// whose first token may say what it holds (`b` bitmapset, `i` integers, `o` OIDs, `x` XIDs), and a Datum is
// `len [ byte … ]`.
//
// The text debug_print_parse sends is wrapped at 78 bytes by format_node_dump. A line break there either
// replaces one space or, when a line holds no space at all, is inserted inside a token. Treating a line break
// as whitespace undoes the first case exactly (a replaced escaped space `\ ` reads as an escaped line break,
// still inside its token). The second case can only split a token of 69 bytes or more, because every
// structural run in the format is short; no token the server prints is that long except an identifier full
// of escaped characters, so such a token is refused rather than guessed at (MAX_TOKEN_BYTES).
//
// readNodeTree reads a tree in one go. A big one (an allowed 20,000-element IN list prints 3 MB) is read instead by
// IncrementalTreeRead, the same grammar on an explicit stack that can stop between any two tokens, so the caller can
// give the event loop a turn between slices (proxy/session/server-check.ts); both give the same tree or the same error.

/** A parsed node: its name (`QUERY`, `FUNCEXPR`, …) and its fields in order. */
export interface PgNode {
  readonly type: string;
  readonly fields: ReadonlyMap<string, PgValue>;
}

/** A typed list of numbers: bitmapset members (`b`), integers (`i`), OIDs (`o`) or XIDs (`x`). */
export interface PgNumberList {
  readonly kind: 'b' | 'i' | 'o' | 'x';
  readonly values: readonly number[];
}

/** A Datum as outDatum prints it: its length and bytes (pass-by-value datums print 8 bytes). */
export interface PgDatum {
  readonly length: number;
  readonly bytes: Uint8Array;
}

/** A bare token (numbers, booleans, enum letters, identifiers) or a quoted string, already de-escaped. */
export type PgScalar = { readonly word: string } | { readonly string: string };

export type PgValue = PgNode | PgNumberList | PgDatum | PgScalar | readonly PgValue[] | null;

export class NodeReadError extends Error {
  override readonly name = 'NodeReadError';
}

/** Longer tokens may have been split by format_node_dump's wrapping; see the header. */
export const MAX_TOKEN_BYTES = 68;

export interface ReadLimits {
  /** Deepest nesting of nodes and lists accepted. */
  maxDepth: number;
  /** Most tokens accepted. */
  maxTokens: number;
}

const DEFAULT_LIMITS: ReadLimits = { maxDepth: 2000, maxTokens: 20_000_000 };

const SPACE = 0x20;
const LF = 0x0a;
const CR = 0x0d;
const TAB = 0x09;
const BACKSLASH = 0x5c;
const LPAREN = 0x28;
const RPAREN = 0x29;
const LBRACE = 0x7b;
const RBRACE = 0x7d;

function isSpace(c: number): boolean {
  return c === SPACE || c === LF || c === TAB || c === CR;
}

function isSpecial(c: number): boolean {
  return c === LPAREN || c === RPAREN || c === LBRACE || c === RBRACE;
}

/** A Datum being read: the bytes so far (out[0..n)). */
interface DatumState {
  out: Uint8Array;
  n: number;
}

/** A token: its raw text (escapes kept, latin1 so one char is one byte) and whether it is one of `(){}`. */
interface Token {
  raw: string;
  special: boolean;
}

class Tokenizer {
  private pos = 0;
  private count = 0;
  private peeked: Token | undefined | null = null;

  constructor(
    private readonly text: string,
    private readonly maxTokens: number,
  ) {}

  peek(): Token | undefined {
    if (this.peeked === null) this.peeked = this.read();
    return this.peeked;
  }

  next(): Token | undefined {
    const t = this.peek();
    this.peeked = null;
    return t;
  }

  /**
   * The bytes of a Datum after its `[`, through the closing `]`: what next() token by token would read (each byte a
   * number token, the same errors), without an object per byte. A 1 MiB string constant prints as a million of them,
   * and reading those as tokens cost ~300 ms of the event loop.
   */
  datumBytes(): Uint8Array {
    const st: DatumState = { out: new Uint8Array(64), n: 0 };
    while (!this.datumStep(st, Infinity));
    return st.out.subarray(0, st.n);
  }

  /**
   * Reads up to `maxBytes` more bytes of a Datum into `st`: true when its `]` was read (the bytes are then
   * `st.out.subarray(0, st.n)`), false when there is more. The cooperative reader calls it in slices.
   */
  datumStep(st: DatumState, maxBytes: number): boolean {
    if (this.peeked !== null) throw new NodeReadError('datum read after a peek');
    const s = this.text;
    let p = this.pos;
    let out = st.out;
    let n = st.n;
    for (let budget = maxBytes; ; budget--) {
      if (budget <= 0) {
        this.pos = p;
        st.out = out;
        st.n = n;
        return false;
      }
      while (p < s.length && isSpace(s.charCodeAt(p))) p++;
      if (p >= s.length) throw new NodeReadError('unterminated datum in node tree');
      if (++this.count > this.maxTokens) throw new NodeReadError('node tree has too many tokens');
      const start = p;
      let c = s.charCodeAt(p);
      if (isSpecial(c)) throw new NodeReadError('unterminated datum in node tree');
      if (c === 0x5d /* ] */ && (p + 1 >= s.length || isSpace(s.charCodeAt(p + 1)) || isSpecial(s.charCodeAt(p + 1)))) {
        this.pos = p + 1;
        st.out = out;
        st.n = n;
        return true;
      }
      let negative = false;
      if (c === 0x2d /* - */) {
        negative = true;
        p++;
      }
      let v = 0;
      const digits = p;
      while (p < s.length) {
        c = s.charCodeAt(p);
        if (c < 0x30 || c > 0x39) break;
        if (v < 1e6) v = v * 10 + (c - 0x30);
        p++;
      }
      if (p < s.length && !isSpace(s.charCodeAt(p))) {
        // Anything glued to the digits (a letter, an escape, a parenthesis) is not a byte.
        if (isSpecial(s.charCodeAt(p))) throw new NodeReadError('unterminated datum in node tree');
        while (p < s.length && !isSpace(s.charCodeAt(p)) && !isSpecial(s.charCodeAt(p))) p++;
        throw new NodeReadError(`expected a number, found "${s.slice(start, Math.min(p, start + 20))}"`);
      }
      if (p - start > MAX_TOKEN_BYTES)
        throw new NodeReadError(`node tree token of ${p - start} bytes may have been split by line wrapping`);
      if (p === digits) throw new NodeReadError(`expected a number, found "${s.slice(start, p)}"`);
      const b = negative ? -v : v;
      if (b < -128 || b > 255) throw new NodeReadError('datum byte out of range');
      if (n === out.length) {
        const bigger = new Uint8Array(out.length * 2);
        bigger.set(out);
        out = bigger;
      }
      out[n++] = b & 0xff;
    }
  }

  private read(): Token | undefined {
    const s = this.text;
    let p = this.pos;
    while (p < s.length && isSpace(s.charCodeAt(p))) p++;
    if (p >= s.length) {
      this.pos = p;
      return undefined;
    }
    if (++this.count > this.maxTokens) throw new NodeReadError('node tree has too many tokens');
    const c = s.charCodeAt(p);
    if (isSpecial(c)) {
      this.pos = p + 1;
      return { raw: s[p] as string, special: true };
    }
    const start = p;
    while (p < s.length) {
      const ch = s.charCodeAt(p);
      if (ch === BACKSLASH) {
        if (p + 1 >= s.length) throw new NodeReadError('node tree ends inside an escape');
        p += 2;
        continue;
      }
      if (isSpace(ch) || isSpecial(ch)) break;
      p++;
    }
    this.pos = p;
    if (p - start > MAX_TOKEN_BYTES)
      throw new NodeReadError(`node tree token of ${p - start} bytes may have been split by line wrapping`);
    return { raw: s.slice(start, p), special: false };
  }
}

/** Removes read.c's protective backslashes (debackslash). A line break after a backslash was a wrapped escaped space. */
function unescapeToken(raw: string): string {
  if (!raw.includes('\\')) return raw;
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i] as string;
    if (ch === '\\' && i + 1 < raw.length) {
      const nx = raw[++i] as string;
      out += nx === '\n' ? ' ' : nx;
    } else out += ch;
  }
  return out;
}

/** Whether the token's last character is the second half of a backslash pair. */
function lastCharEscaped(raw: string): boolean {
  let escaped = false;
  for (let i = 0; i < raw.length; i++) {
    if (raw.charCodeAt(i) === BACKSLASH && i + 1 < raw.length) {
      i++;
      escaped = i === raw.length - 1;
    } else escaped = false;
  }
  return escaped;
}

const NODE_NAME = /^[A-Z][A-Z0-9_]*$/;
const FIELD_NAME = /^:[A-Za-z_][A-Za-z0-9_]*$/;
const NUMBER = /^-?[0-9]+$/;

function toNumber(raw: string): number {
  if (!NUMBER.test(raw)) throw new NodeReadError(`expected a number, found "${raw.slice(0, 20)}"`);
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new NodeReadError(`number out of range: ${raw.slice(0, 20)}`);
  return n;
}

/** A bare word or a quoted string token as a value. */
function scalarOf(raw: string): PgScalar {
  if (raw.startsWith('"')) {
    if (raw.length < 2 || !raw.endsWith('"') || lastCharEscaped(raw))
      throw new NodeReadError('unterminated string in node tree');
    return { string: unescapeToken(raw.slice(1, -1)) };
  }
  return { word: unescapeToken(raw) };
}

/** Shared values kept per read at most (a tree's distinct short words and field names are a few hundred). */
const MAX_INTERNED = 4096;

/**
 * One object per distinct short word and one string per field name within a read. A long IN list's tree repeats
 * `:consttype 23 :consttypmod -1 :constcollid 0 …` once per element; sharing those cuts what the tree holds (and what
 * the garbage collector copies while it is built) by ~40 % (a 20,000-element IN list: 23 → 13 MiB of heap). The values are read-only, so sharing is not
 * observable. Quoted strings and words over 16 bytes (names, mostly) are not shared. Only the incremental reader (big
trees) shares: for a small tree the two maps cost more than they save (a 2.7 KiB tree: 38 → 55 µs).
 */
class Interner {
  private readonly words = new Map<string, PgScalar>();
  private readonly fields = new Map<string, string>();

  scalar(raw: string): PgScalar {
    if (raw.length > 16 || raw.charCodeAt(0) === 0x22 /* " */) return scalarOf(raw);
    const hit = this.words.get(raw);
    if (hit !== undefined) return hit;
    const v = scalarOf(raw);
    if (this.words.size < MAX_INTERNED) this.words.set(raw, v);
    return v;
  }

  /** A field token (`:name`, already checked) without its colon. */
  field(raw: string): string {
    const hit = this.fields.get(raw);
    if (hit !== undefined) return hit;
    const name = raw.slice(1);
    if (this.fields.size < MAX_INTERNED) this.fields.set(raw, name);
    return name;
  }
}

class Reader {
  private depth = 0;

  constructor(
    private readonly tok: Tokenizer,
    private readonly maxDepth: number,
  ) {}

  private enter(): void {
    if (++this.depth > this.maxDepth) throw new NodeReadError('node tree is nested too deeply');
  }

  /** One value: a node, a list, `<>`, or a word (with a following `[ … ]` making it a Datum). */
  value(): PgValue {
    const t = this.tok.next();
    if (t === undefined) throw new NodeReadError('node tree ends where a value was expected');
    if (t.special) {
      if (t.raw === '{') return this.nodeBody();
      if (t.raw === '(') return this.listBody();
      throw new NodeReadError(`unexpected "${t.raw}" where a value was expected`);
    }
    if (t.raw === '<>') return null;
    // A value may start with ':' (an alias named ":x" prints bare): in value position it is a word. A missing
    // value then shows up as a structural error at the next token.
    // outNode prints `?` for a node type it cannot write (PostgreSQL 15 does so for EXPLAIN's inner statement):
    // the tree is incomplete, whatever the rest of it says.
    if (t.raw === '?') throw new NodeReadError('the server could not print part of the tree');
    const after = this.tok.peek();
    if (after !== undefined && !after.special && after.raw === '[') {
      this.tok.next();
      return this.datum(toNumber(t.raw));
    }
    return scalarOf(t.raw);
  }

  private datum(length: number): PgDatum {
    // A copy of exactly the bytes read, so the result holds no slack.
    return { length, bytes: this.tok.datumBytes().slice() };
  }

  /** After `{`: NAME then `:field value` pairs up to `}`. */
  private nodeBody(): PgNode {
    this.enter();
    const name = this.tok.next();
    if (name === undefined || name.special || !NODE_NAME.test(name.raw)) {
      throw new NodeReadError(`expected a node name after "{", found "${name?.raw.slice(0, 30) ?? 'end'}"`);
    }
    const fields = new Map<string, PgValue>();
    for (;;) {
      const t = this.tok.next();
      if (t === undefined) throw new NodeReadError(`node ${name.raw} is not closed`);
      if (t.special && t.raw === '}') break;
      if (t.special || !FIELD_NAME.test(t.raw))
        throw new NodeReadError(`expected a field of ${name.raw}, found "${t.raw.slice(0, 30)}"`);
      const field = t.raw.slice(1);
      if (fields.has(field)) throw new NodeReadError(`field ${field} repeated in ${name.raw}`);
      fields.set(field, this.value());
    }
    this.depth--;
    return { type: name.raw, fields };
  }

  /** After `(`: a typed number list, or values up to `)`. */
  private listBody(): PgNumberList | PgValue[] {
    this.enter();
    const first = this.tok.peek();
    if (
      first !== undefined &&
      !first.special &&
      (first.raw === 'b' || first.raw === 'i' || first.raw === 'o' || first.raw === 'x')
    ) {
      this.tok.next();
      const kind = first.raw;
      const values: number[] = [];
      for (;;) {
        const t = this.tok.next();
        if (t === undefined) throw new NodeReadError('unterminated list in node tree');
        if (t.special) {
          if (t.raw !== ')') throw new NodeReadError(`unexpected "${t.raw}" in a number list`);
          break;
        }
        values.push(toNumber(t.raw));
      }
      this.depth--;
      return { kind, values };
    }
    const items: PgValue[] = [];
    for (;;) {
      const t = this.tok.peek();
      if (t === undefined) throw new NodeReadError('unterminated list in node tree');
      if (t.special && t.raw === ')') {
        this.tok.next();
        break;
      }
      items.push(this.value());
    }
    this.depth--;
    return items;
  }
}

/**
 * Reads one node tree. `text` must hold the bytes as latin1 (one character per byte) so token lengths are
 * byte lengths; identifiers in the result are therefore latin1-decoded, which nothing here relies on.
 */
export function readNodeTree(text: string, limits: Partial<ReadLimits> = {}): PgValue {
  const l = { ...DEFAULT_LIMITS, ...limits };
  const tok = new Tokenizer(text, l.maxTokens);
  const value = new Reader(tok, l.maxDepth).value();
  const rest = tok.next();
  if (rest !== undefined) throw new NodeReadError(`unexpected "${rest.raw.slice(0, 30)}" after the node tree`);
  return value;
}

/** Trees shorter than this are read in one go (a pgbench -S tree is ~2 KiB and reads in well under a millisecond). */
export const COOPERATIVE_READ_BYTES = 32 * 1024;

/**
 * A long pass done in slices: each run() works until the tree is done (true) or the clock (performance.now()) has
 * passed `until` (false), checking the clock every few hundred steps. The caller decides what happens between
 * slices (proxy/session/server-check.ts gives the event loop a turn); policy/ itself stays synchronous.
 */
export interface Incremental {
  run(until: number): boolean;
}

/** Checked by the cooperative passes every this many steps: performance.now() costs ~50 ns, a step ~100 ns. */
const STEPS_PER_CLOCK_CHECK = 512;

/** Bytes of a Datum read per step of the cooperative reader (a 1 MiB constant prints as ~4 MB of digits). */
const DATUM_BYTES_PER_STEP = 256;

type Frame =
  | { kind: 'node'; name: string; fields: Map<string, PgValue>; field: string | undefined }
  | { kind: 'list'; items: PgValue[] }
  | { kind: 'numbers'; listKind: PgNumberList['kind']; values: number[] }
  | { kind: 'datum'; length: number; st: DatumState };

/**
 * The same grammar as Reader with an explicit stack instead of recursion, so it can stop between any two tokens and
 * go on later. It consumes tokens in exactly Reader's order and throws the same errors at the same tokens, so its
 * result (and its failure) is Reader's; test/unit/policy/pgnode.test.ts compares them.
 */
class SteppingReader {
  private readonly intern = new Interner();
  private readonly stack: Frame[] = [];
  private depth = 0;
  /** A value is to be read next (into the frame on top, or as the root). */
  private wantValue = true;
  private done = false;
  private result: PgValue = null;

  constructor(
    private readonly tok: Tokenizer,
    private readonly maxDepth: number,
    private readonly stepsPerCheck: number,
  ) {}

  private enter(): void {
    if (++this.depth > this.maxDepth) throw new NodeReadError('node tree is nested too deeply');
  }

  /** Hands a finished value to the frame on top, or ends the read when there is none. */
  private deliver(v: PgValue): void {
    const top = this.stack[this.stack.length - 1];
    if (top === undefined) {
      this.result = v;
      this.done = true;
    } else if (top.kind === 'node') {
      top.fields.set(top.field as string, v);
      top.field = undefined;
    } else if (top.kind === 'list') top.items.push(v);
    else throw new NodeReadError('value delivered to a number list or datum'); // unreachable: those frames read no values
  }

  /** Reader.value() up to its first nested read: a finished scalar is delivered, a node or list opens a frame. */
  private startValue(): void {
    const t = this.tok.next();
    if (t === undefined) throw new NodeReadError('node tree ends where a value was expected');
    if (t.special) {
      if (t.raw === '{') {
        this.enter();
        const name = this.tok.next();
        if (name === undefined || name.special || !NODE_NAME.test(name.raw)) {
          throw new NodeReadError(`expected a node name after "{", found "${name?.raw.slice(0, 30) ?? 'end'}"`);
        }
        this.stack.push({ kind: 'node', name: name.raw, fields: new Map(), field: undefined });
        return;
      }
      if (t.raw === '(') {
        this.enter();
        const first = this.tok.peek();
        if (
          first !== undefined &&
          !first.special &&
          (first.raw === 'b' || first.raw === 'i' || first.raw === 'o' || first.raw === 'x')
        ) {
          this.tok.next();
          this.stack.push({ kind: 'numbers', listKind: first.raw, values: [] });
        } else this.stack.push({ kind: 'list', items: [] });
        return;
      }
      throw new NodeReadError(`unexpected "${t.raw}" where a value was expected`);
    }
    if (t.raw === '<>') {
      this.deliver(null);
      return;
    }
    if (t.raw === '?') throw new NodeReadError('the server could not print part of the tree');
    const after = this.tok.peek();
    if (after !== undefined && !after.special && after.raw === '[') {
      this.tok.next();
      this.stack.push({ kind: 'datum', length: toNumber(t.raw), st: { out: new Uint8Array(64), n: 0 } });
      return;
    }
    this.deliver(this.intern.scalar(t.raw));
  }

  /** One step: a token or a slice of a Datum's bytes. */
  private step(): void {
    if (this.wantValue) {
      this.wantValue = false;
      this.startValue();
      return;
    }
    const top = this.stack[this.stack.length - 1] as Frame;
    switch (top.kind) {
      case 'node': {
        const t = this.tok.next();
        if (t === undefined) throw new NodeReadError(`node ${top.name} is not closed`);
        if (t.special && t.raw === '}') {
          this.stack.pop();
          this.depth--;
          this.deliver({ type: top.name, fields: top.fields });
          return;
        }
        if (t.special || !FIELD_NAME.test(t.raw))
          throw new NodeReadError(`expected a field of ${top.name}, found "${t.raw.slice(0, 30)}"`);
        const field = this.intern.field(t.raw);
        if (top.fields.has(field)) throw new NodeReadError(`field ${field} repeated in ${top.name}`);
        top.field = field;
        this.wantValue = true;
        return;
      }
      case 'list': {
        const t = this.tok.peek();
        if (t === undefined) throw new NodeReadError('unterminated list in node tree');
        if (t.special && t.raw === ')') {
          this.tok.next();
          this.stack.pop();
          this.depth--;
          this.deliver(top.items);
          return;
        }
        this.wantValue = true;
        return;
      }
      case 'numbers': {
        const t = this.tok.next();
        if (t === undefined) throw new NodeReadError('unterminated list in node tree');
        if (t.special) {
          if (t.raw !== ')') throw new NodeReadError(`unexpected "${t.raw}" in a number list`);
          this.stack.pop();
          this.depth--;
          this.deliver({ kind: top.listKind, values: top.values });
          return;
        }
        top.values.push(toNumber(t.raw));
        return;
      }
      case 'datum': {
        if (!this.tok.datumStep(top.st, DATUM_BYTES_PER_STEP)) return;
        this.stack.pop();
        this.deliver({ length: top.length, bytes: top.st.out.slice(0, top.st.n) });
        return;
      }
    }
  }

  /** Runs until the tree is read (true) or `until` (performance.now()) has passed (false). */
  run(until: number): boolean {
    for (let i = 1; !this.done; i++) {
      this.step();
      if (i % this.stepsPerCheck === 0 && !this.done && performance.now() >= until) return false;
    }
    return true;
  }

  get value(): PgValue {
    return this.result;
  }
}

export interface IncrementalOptions {
  /** Steps between two looks at the clock (the default suits production; tests stop after every few steps). */
  stepsPerClockCheck?: number;
}

/**
 * readNodeTree in slices (see Incremental): the same result, or the same NodeReadError at the same point of the
 * text. Several reads can be in progress at once.
 */
export class IncrementalTreeRead implements Incremental {
  private readonly tok: Tokenizer;
  private readonly reader: SteppingReader;
  private finished = false;

  constructor(text: string, limits: Partial<ReadLimits> = {}, opts: IncrementalOptions = {}) {
    const l = { ...DEFAULT_LIMITS, ...limits };
    this.tok = new Tokenizer(text, l.maxTokens);
    this.reader = new SteppingReader(this.tok, l.maxDepth, opts.stepsPerClockCheck ?? STEPS_PER_CLOCK_CHECK);
  }

  run(until: number): boolean {
    if (this.finished) return true;
    if (!this.reader.run(until)) return false;
    const rest = this.tok.next();
    if (rest !== undefined) throw new NodeReadError(`unexpected "${rest.raw.slice(0, 30)}" after the node tree`);
    this.finished = true;
    return true;
  }

  /** The tree, once run() returned true. */
  get value(): PgValue {
    if (!this.finished) throw new NodeReadError('node tree read not finished');
    return this.reader.value;
  }
}

/** walkNodes in slices (see Incremental): the same visits in the same order. */
export class IncrementalWalk implements Incremental {
  private readonly stack: PgValue[];

  private readonly stepsPerCheck: number;

  constructor(
    root: PgValue,
    private readonly visit: (node: PgNode) => void,
    opts: IncrementalOptions = {},
  ) {
    this.stack = [root];
    this.stepsPerCheck = opts.stepsPerClockCheck ?? STEPS_PER_CLOCK_CHECK;
  }

  run(until: number): boolean {
    const stack = this.stack;
    for (let i = 1; stack.length > 0; i++) {
      if (i % this.stepsPerCheck === 0 && performance.now() >= until) return false;
      const v = stack.pop();
      if (v === null || v === undefined || typeof v !== 'object') continue;
      if (Array.isArray(v)) {
        for (let j = v.length - 1; j >= 0; j--) stack.push(v[j] as PgValue);
      } else if (isNode(v)) {
        this.visit(v);
        const children = [...v.fields.values()];
        for (let j = children.length - 1; j >= 0; j--) stack.push(children[j] as PgValue);
      }
    }
    return true;
  }
}

export function isNode(v: PgValue | undefined): v is PgNode {
  return v !== null && v !== undefined && typeof v === 'object' && 'type' in v && 'fields' in v;
}

export function isNumberList(v: PgValue | undefined): v is PgNumberList {
  return v !== null && v !== undefined && typeof v === 'object' && 'kind' in v && 'values' in v;
}

/** A field's numeric value (`:relid 16384`), or undefined when absent or not a number. */
export function numberField(node: PgNode, field: string): number | undefined {
  const v = node.fields.get(field);
  if (v === null || v === undefined || typeof v !== 'object' || !('word' in v) || !NUMBER.test(v.word))
    return undefined;
  return Number(v.word);
}

/** A field's bare word (`:relkind r`, `:inh true`). */
export function wordField(node: PgNode, field: string): string | undefined {
  const v = node.fields.get(field);
  if (v === null || v === undefined || typeof v !== 'object' || !('word' in v)) return undefined;
  return v.word;
}

/** Members of a bitmapset field (`:selectedCols (b 8 11)`); `<>` and `(b)` are empty. */
export function bitmapField(node: PgNode, field: string): readonly number[] | undefined {
  const v = node.fields.get(field);
  if (v === null) return [];
  if (isNumberList(v) && v.kind === 'b') return v.values;
  return undefined;
}

/** Calls `visit` on every node of the tree, depth first, parents before children. */
export function walkNodes(root: PgValue, visit: (node: PgNode) => void): void {
  const stack: PgValue[] = [root];
  while (stack.length > 0) {
    const v = stack.pop();
    if (v === null || v === undefined || typeof v !== 'object') continue;
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push(v[i] as PgValue);
    } else if (isNode(v)) {
      visit(v);
      const children = [...v.fields.values()];
      for (let i = children.length - 1; i >= 0; i--) stack.push(children[i] as PgValue);
    }
  }
}
