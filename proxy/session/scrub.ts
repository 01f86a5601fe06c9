// Scrubs row values out of upstream ErrorResponse and NoticeResponse messages before they reach the client.
//
// Postgres quotes data in some errors: the failing row of a NOT NULL, CHECK, partition or view check option
// violation, the key of a unique, exclusion or foreign key violation, the text a type's input function refused.
// The upstream login can read every column, so those values may include columns the client's role is denied
// (an SSN in `Failing row contains (7, null, u7@x.test, 000-00-7)`). The SQLSTATE, severity, message and the
// name fields (schema, table, column, constraint, type) are kept; only the values go. When it is unclear
// whether a DETAIL carries values it is withheld: a lost DETAIL is an inconvenience, a leaked value a breach.
//
// Which messages embed values, from PostgreSQL's source (REL_15 and later):
//   src/backend/executor/execMain.c     ExecConstraints, ExecPartitionCheckEmitError, ExecWithCheckOptions:
//                                       DETAIL `Failing row contains (…).` (23502, 23514, 44000)
//   src/backend/executor/execPartition.c ExecFindPartition: DETAIL `Partition key of the failing row contains (k) = (v).` (23514)
//   src/backend/access/index/genam.c    BuildIndexValueDescription builds `(cols)=(vals)`, used by
//     src/backend/access/nbtree/nbtinsert.c  _bt_check_unique: DETAIL `Key (k)=(v) already exists.` (23505)
//     src/backend/utils/sort/tuplesortvariants.c  CREATE UNIQUE INDEX: DETAIL `Key (k)=(v) is duplicated.` (23505)
//     src/backend/executor/execIndexing.c  exclusion constraints: DETAIL `Key (k)=(v) conflicts with [existing] key (k)=(w).` (23P01)
//   src/backend/utils/adt/ri_triggers.c ri_ReportViolation: DETAIL `Key (k)=(v) is not present in table "t".`,
//                                       `Key (k)=(v) is still referenced from table "t".` (23503)
//   src/backend/utils/adt/numutils.c, int8.c, float.c, numeric.c, bool.c, uuid.c, enum.c, arrayfuncs.c,
//     rowtypes.c, rangetypes.c, datetime.c (DateTimeParseError), date.c, timestamp.c, formatting.c:
//     MESSAGE `invalid input syntax for type T: "v"`, `value "v" is out of range for type T`,
//     `"v" is out of range for type double precision`, `date/time field value out of range: "v"`,
//     `malformed array literal: "v"`, `invalid input value for enum E: "v"`, `invalid value "v" for "MM"` (class 22)
//   src/backend/utils/mb/mbutils.c      `invalid byte sequence for encoding "UTF8": 0x..`,
//                                       `character with byte sequence 0x.. in encoding "A" has no equivalent in encoding "B"` (22021, 22P05)
//   src/backend/utils/adt/json.c / common/jsonapi.c  DETAIL `Token "v" is invalid.`, CONTEXT `JSON data, line 1: …` (22P02)
//   src/backend/utils/adt/xml.c         DETAIL: libxml's message with the offending input line (2200M, 2200N)
//   src/backend/commands/copyfromparse.c CopyFromErrorCallback: CONTEXT `COPY t, line 1, column c: "v"` and `COPY t, line 1: "…"`
// Hints (errhint) never carry row values in these paths; they are kept unless they match a value pattern anyway.
//
// Names the client never wrote are withheld too: the session's role may not see every object the upstream login sees
// (deniedColumns, narrowed column lists, catalog: scoped), and PostgreSQL names some it found by itself:
//   src/backend/parser/parse_relation.c errorMissingColumn: HINT `Perhaps you meant to reference the column "t.c".`
//                                       (a fuzzy match over every column of the query's relations, denied ones too) (42703)
//   src/backend/catalog/dependency.c    reportDependentObjects: DETAIL `view s.v depends on table t`, one line per
//                                       dependant in any schema, `and N other objects (see server log for list)` (2BP01)
//   src/pl/plpgsql/src/pl_exec.c, src/backend/executor/functions.c  CONTEXT frames `PL/pgSQL function f() line 3
//                                       at …` / `SQL function "f" statement 1` under `SQL statement "…"` lines quoting
//                                       the function's source: withheld unless the code is the client's own DO block
//   src/backend/utils/adt/ri_triggers.c ri_ReportViolation on the referenced side: MESSAGE `update or delete on table
//                                       "b" violates foreign key constraint "c" on table "a"`, DETAIL `Key … is still
//                                       referenced from table "a".`, fields s/t/n naming a and c — the referencing
//                                       table, which the client never wrote and its role may not see (23503); and
//                                       on the referencing side DETAIL `Key is not present in table "b".`
import { encodeNoticeResponse, encodeProxyError, splitErrorFields } from '../wire/backend.ts';
import { BackendType } from '../wire/codes.ts';
import type { Frame } from '../wire/framer.ts';
import { Writer } from '../wire/writer.ts';
import { ProxyError } from '../../lib/errors.ts';
import { SqlState } from '../../lib/sqlstate.ts';

/** What replaces a DETAIL (or HINT, or internal query) that carried row values. */
export const WITHHELD_DETAIL = 'row values withheld by pgwarden';

/** What replaces a value quoted inside a message: `invalid input syntax for type integer: "…"`. */
export const REDACTED_VALUE = '…';

/** SQLSTATE classes whose messages quote values (Appendix A). */
const DataException = '22';
const IntegrityConstraintViolation = '23';
const WithCheckOptionViolation = '44';

// Error and notice field codes (protocol-error-fields.html), as bytes.
const Field = {
  Severity: 0x53, // S
  SeverityNonLocalized: 0x56, // V
  Code: 0x43, // C
  Message: 0x4d, // M
  Detail: 0x44, // D
  Hint: 0x48, // H
  Position: 0x50, // P
  InternalPosition: 0x70, // p
  InternalQuery: 0x71, // q
  Where: 0x57, // W
  SchemaName: 0x73, // s
  TableName: 0x74, // t
  ColumnName: 0x63, // c
  DataTypeName: 0x64, // d
  ConstraintName: 0x6e, // n
  File: 0x46, // F
  Line: 0x4c, // L
  Routine: 0x52, // R
} as const;

/** Fields that never carry values: severities, SQLSTATE, positions, object names, source location. */
const METADATA_FIELDS: ReadonlySet<number> = new Set([
  Field.Severity,
  Field.SeverityNonLocalized,
  Field.Code,
  Field.Position,
  Field.InternalPosition,
  Field.SchemaName,
  Field.TableName,
  Field.ColumnName,
  Field.DataTypeName,
  Field.ConstraintName,
  Field.File,
  Field.Line,
  Field.Routine,
]);

/**
 * Text that describes a row or a key by its values: `Failing row contains (…)`, `Partition key of the failing
 * row contains (k) = (v)`, and every `(…)=(…)` key/value pair BuildIndexValueDescription and ri_triggers.c write.
 */
const ROW_VALUES = [/failing row contains/i, /\)\s*=\s*\(/];

/** CONTEXT lines that quote input data: COPY's current line or column value, the JSON parser's input line, bind parameters. */
const CONTEXT_VALUES = [
  /\bCOPY [^\n]*, line \d+[^\n]*: "/,
  /\bJSON data, line \d+:/,
  /\bwith parameters: /,
  /\$\d+ = '/,
];

/**
 * Class 23 DETAILs Postgres writes when the session may not see the key's columns: no values, so they are kept.
 * Every other class 23 DETAIL is withheld, including forms this list does not know (a newer server, a translation).
 */
const SAFE_CONSTRAINT_DETAIL = [
  /^Key is not present in table ".*"\.$/s,
  /^Key is still referenced from table ".*"\.$/s,
  /^Key conflicts exist\.$/,
  /^Key conflicts with existing key\.$/,
  /^Duplicate keys exist\.$/,
  /^MATCH FULL does not allow mixing of null and nonnull key values\.$/,
];

/** A quoted word right after one of these is an object's name, not a value: `for encoding "UTF8"`, `column "ssn"`. */
const NAME_BEFORE_QUOTE =
  /\b(?:column|relation|table|view|index|constraint|encoding|type|domain|schema|function|parameter|sequence|operator|collation|database|role|enum)\s$/i;

const lossyUtf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

const carriesRowValues = (text: string): boolean => ROW_VALUES.some((re) => re.test(text));

/** HINTs that name an object PostgreSQL found by itself, not one the client wrote (see the file header). */
const FOUND_NAMES_HINT = [/^Perhaps you meant to reference the column /];

/** foreign_key_violation raised on the referenced table: the MESSAGE and the name fields name the referencing one. */
const FK_FROM_ELSEWHERE = /^(update or delete on table ".*") violates foreign key constraint ".*" on table ".*"$/s;
/** The referenced side's DETAILs naming the other table, value-free (SAFE_CONSTRAINT_DETAIL), and what replaces them. */
const FK_OTHER_TABLE_DETAIL: readonly [RegExp, string][] = [
  [/^Key is not present in table ".*"\.$/s, 'Key is not present in the referenced table.'],
  [/^Key is still referenced from table ".*"\.$/s, 'Key is still referenced from another table.'],
];

/**
 * A CONTEXT with a frame of a named function's code (`PL/pgSQL function f() line 3 at …`, `SQL function "f" statement
 * 1`, another language's): its lines name that function and quote its source (`SQL statement "…"`), which the role
 * may not read (a column default's, a trigger's, a view's). The client's own DO block (`inline_code_block`) is not
 * such a frame. Any mention of a function other than that one withholds the whole CONTEXT.
 */
function inFunctionCode(text: string): boolean {
  return /function/i.test(text.replaceAll('PL/pgSQL function inline_code_block', ''));
}

/** SQLSTATE class 2B, dependent objects still exist: its DETAIL lists the dependants, wherever they are. */
const DependentObjectsStillExist = '2B';

/** What replaces a DETAIL that listed objects the client did not name. */
export const WITHHELD_DEPENDANTS = 'the dependent objects are not listed by pgwarden (they may lie outside this role)';

/**
 * Returns a copy of an ErrorResponse or NoticeResponse with the row values Postgres quoted in it removed, or
 * undefined when there is nothing to remove (the caller then forwards the original bytes).
 *
 * DETAIL is replaced by {@link WITHHELD_DETAIL} when it describes a row or key by value, and for class 23 and 44
 * unless it is one of the few value-free forms; values quoted in class 22 and 23 MESSAGEs become `"…"`;
 * CONTEXT and the internal query are dropped when they quote values. SQLSTATE, severity, position and the
 * schema/table/column/constraint/type name fields are kept byte for byte, in their original order.
 * @see https://www.postgresql.org/docs/current/protocol-error-fields.html
 */
export function scrubErrorFrame(frame: Frame): Buffer | undefined {
  if (frame.type !== BackendType.ErrorResponse && frame.type !== BackendType.NoticeResponse) return undefined;
  const fields = splitErrorFields(frame.body);
  if (fields === undefined) return malformedReplacement(frame.type);
  let sqlstate = '';
  let message = '';
  for (const f of fields) {
    if (f.code === Field.Code) sqlstate = f.bytes.toString('latin1');
    if (f.code === Field.Message) message = lossyUtf8.decode(f.bytes);
  }
  const cls = sqlstate.slice(0, 2);
  // A foreign key's other table (the referencing one, reported on the referenced side): its name goes everywhere.
  const otherTable = cls === IntegrityConstraintViolation && FK_FROM_ELSEWHERE.test(message);

  let changed = false;
  const out: { code: number; bytes: Buffer | undefined; text: string | undefined }[] = [];
  for (const f of fields) {
    if (otherTable && (f.code === Field.SchemaName || f.code === Field.TableName || f.code === Field.ConstraintName)) {
      changed = true;
      continue;
    }
    if (METADATA_FIELDS.has(f.code)) {
      out.push({ code: f.code, bytes: f.bytes, text: undefined });
      continue;
    }
    const text = lossyUtf8.decode(f.bytes);
    const scrubbed = scrubField(f.code, text, cls);
    if (scrubbed === text) {
      out.push({ code: f.code, bytes: f.bytes, text: undefined });
    } else {
      changed = true;
      // undefined drops the field; the message (M) is mandatory and scrubField never drops it.
      if (scrubbed !== undefined) out.push({ code: f.code, bytes: undefined, text: scrubbed });
    }
  }
  if (!changed) return undefined;

  const w = new Writer(frame.body.length + 64);
  for (const f of out) {
    w.uint8(f.code);
    if (f.bytes !== undefined) w.bytes(f.bytes).uint8(0);
    else w.cstring(f.text ?? '');
  }
  return w.uint8(0).frame(frame.type);
}

/**
 * Runs the scrubber on an upstream ErrorResponse or NoticeResponse that a ResponseTracker forwarded into `out`
 * at or after index `from` (as its original bytes, `frame.raw`) and swaps in the scrubbed copy.
 * Returns true when `out` changed. Messages the tracker replaced or swallowed are not touched.
 */
export function scrubForwarded(frame: Frame, out: Buffer[], from: number): boolean {
  for (let i = from; i < out.length; i++) {
    if (out[i] !== frame.raw) continue;
    const replacement = scrubErrorFrame(frame);
    if (replacement === undefined) return false;
    out[i] = replacement;
    return true;
  }
  return false;
}

/** The scrubbed text of one field; the same string when unchanged; undefined to drop the field. */
function scrubField(code: number, text: string, cls: string): string | undefined {
  switch (code) {
    case Field.Message:
      return scrubMessage(text, cls);
    case Field.Detail:
      return scrubDetail(text, cls);
    case Field.Hint:
      return carriesRowValues(text) || FOUND_NAMES_HINT.some((re) => re.test(text)) ? undefined : text;
    case Field.InternalQuery:
      return carriesRowValues(text) ? undefined : text;
    case Field.Where:
      return carriesRowValues(text) || CONTEXT_VALUES.some((re) => re.test(text)) || inFunctionCode(text)
        ? undefined
        : text;
    default:
      // A field type this version of the protocol does not define: unknown content, so it does not pass.
      return undefined;
  }
}

function scrubMessage(text: string, cls: string): string {
  // Postgres never writes these into a MESSAGE; a function raising one (RAISE EXCEPTION) might.
  if (carriesRowValues(text)) return `message withheld by pgwarden: it quoted row values`;
  const fk = FK_FROM_ELSEWHERE.exec(text);
  if (fk !== null && cls === IntegrityConstraintViolation)
    return `${fk[1] ?? 'update or delete'} violates a foreign key constraint of another table`;
  if (cls === DataException) return redactDataMessage(text);
  if (cls === IntegrityConstraintViolation) return redactAfterColon(text);
  return text;
}

function scrubDetail(text: string, cls: string): string {
  if (carriesRowValues(text)) return WITHHELD_DETAIL;
  if (cls === DependentObjectsStillExist) return WITHHELD_DEPENDANTS;
  if (cls === IntegrityConstraintViolation || cls === WithCheckOptionViolation) {
    for (const [re, instead] of FK_OTHER_TABLE_DETAIL) if (re.test(text)) return instead;
    return SAFE_CONSTRAINT_DETAIL.some((re) => re.test(text)) ? text : WITHHELD_DETAIL;
  }
  if (cls === DataException) {
    // xml.c's DETAIL is libxml's message plus the offending input line; the JSON parser's points into the input.
    if (text.includes('\n') || /\bline \d+:/.test(text)) return WITHHELD_DETAIL;
    return redactQuoted(redactHexBytes(text));
  }
  return text;
}

/** `type integer: "12-3"` → `type integer: "…"`: from the first `: "` to the last quote, as the value may hold quotes. */
function redactAfterColon(text: string): string {
  const open = text.indexOf(': "');
  if (open === -1) return text;
  const last = text.lastIndexOf('"');
  if (last <= open + 2) return `${text.slice(0, open)}: "${REDACTED_VALUE}"`;
  return `${text.slice(0, open)}: "${REDACTED_VALUE}"${text.slice(last + 1)}`;
}

/** Every value a class 22 message may quote; known forms first so their surrounding words survive. */
function redactDataMessage(text: string): string {
  let m = /^invalid byte sequence for encoding (".*?"): .*$/s.exec(text);
  if (m) return `invalid byte sequence for encoding ${m[1] ?? ''}: ${REDACTED_VALUE}`;
  m = /^invalid value ".*" for "([^"]*)"$/s.exec(text);
  if (m) return `invalid value "${REDACTED_VALUE}" for "${m[1] ?? ''}"`;
  m = /^requested character (too large|not valid) for encoding: .*$/s.exec(text);
  if (m) return `requested character ${m[1] ?? ''} for encoding: ${REDACTED_VALUE}`;
  return redactQuoted(redactHexBytes(redactAfterColon(text)));
}

/** `character with byte sequence 0xe2 0x82 0xac in encoding …` → `character with byte sequence … in encoding …`. */
function redactHexBytes(text: string): string {
  return text.replace(/0x[0-9a-fA-F]{2}(?: 0x[0-9a-fA-F]{2})*/g, REDACTED_VALUE);
}

/**
 * Replaces quoted values with `"…"`, keeping quoted names (`column "ssn"`, `encoding "UTF8"`). A value may itself
 * contain quotes, so from a value's opening quote everything up to the last quote of the text goes.
 */
function redactQuoted(text: string): string {
  let out = '';
  let i = 0;
  for (;;) {
    const open = text.indexOf('"', i);
    if (open === -1) return out + text.slice(i);
    const close = text.indexOf('"', open + 1);
    if (close === -1) return `${out}${text.slice(i, open)}"${REDACTED_VALUE}`;
    const inner = text.slice(open + 1, close);
    if (inner === REDACTED_VALUE || NAME_BEFORE_QUOTE.test(text.slice(Math.max(0, open - 24), open))) {
      out += text.slice(i, close + 1);
      i = close + 1;
      continue;
    }
    const last = text.lastIndexOf('"');
    out += `${text.slice(i, open)}"${REDACTED_VALUE}"`;
    i = last + 1;
  }
}

/** An upstream error or notice we cannot parse cannot be checked, so none of its text passes. */
function malformedReplacement(type: number): Buffer {
  if (type === BackendType.ErrorResponse)
    return encodeProxyError(
      new ProxyError('ERR_UPSTREAM_MALFORMED', 'pgwarden withheld a malformed error message from the database'),
    );
  return encodeNoticeResponse({
    severity: 'WARNING',
    sqlstate: SqlState.Warning,
    message: 'pgwarden withheld a malformed notice message from the database',
  });
}
