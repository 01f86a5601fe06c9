// The error scrubber: row values Postgres quotes in errors and notices never pass; SQLSTATE, message and names do, byte for byte.
import { Parser } from 'pg-protocol/dist/parser.js';
import { describe, expect, it } from 'vitest';
import {
  REDACTED_VALUE,
  WITHHELD_DEPENDANTS,
  WITHHELD_DETAIL,
  scrubErrorFrame,
  scrubForwarded,
} from '../../../proxy/session/scrub.ts';
import type { Frame } from '../../../proxy/wire/framer.ts';
import { Bytes, typed } from '../../helpers/bytes.ts';

type Fields = [string, string][];

/** An ErrorResponse ('E') or NoticeResponse ('N') built by hand, fields in the given order. */
function message(type: 'E' | 'N', fields: Fields): Buffer {
  const b = new Bytes();
  for (const [code, value] of fields) b.str(code).cstr(value);
  return typed(type, b.u8(0));
}

function frameOf(raw: Buffer): Frame {
  return { type: raw[0] as number, body: raw.subarray(5), raw };
}

/** What node-postgres makes of the bytes: an independent decoder of the re-encoded message. */
function parseWithPg(buf: Buffer): Record<string, unknown> {
  const out: Record<string, unknown>[] = [];
  new Parser().parse(buf, (msg) => out.push(msg as unknown as Record<string, unknown>));
  expect(out).toHaveLength(1);
  return out[0] as Record<string, unknown>;
}

/** The fields of a message as [code, text] pairs in wire order (a second, hand-written decoder). */
function fieldsOf(buf: Buffer): Fields {
  expect(buf.readInt32BE(1)).toBe(buf.length - 1);
  const body = buf.subarray(5);
  const out: Fields = [];
  let i = 0;
  while (body[i] !== 0) {
    const end = body.indexOf(0, i + 1);
    out.push([String.fromCharCode(body[i] as number), body.subarray(i + 1, end).toString('utf8')]);
    i = end + 1;
  }
  expect(i).toBe(body.length - 1);
  return out;
}

const error = (code: string, m: string, extra: Fields = []): Buffer =>
  message('E', [['S', 'ERROR'], ['V', 'ERROR'], ['C', code], ['M', m], ...extra]);

interface Case {
  family: string;
  /** Where Postgres writes it. */
  source: string;
  code: string;
  message: string;
  detail?: string;
  hint?: string;
  where?: string;
  /** The value that must not survive. */
  secret: string;
  expectMessage: string;
  /** The DETAIL the client gets; undefined when the message had none. */
  expectDetail?: string;
  /** The schema and table name fields are dropped (they name a table the client did not write). */
  dropsNames?: true;
  /** Whether CONTEXT survives (only meaningful when `where` is set). */
  keepsWhere?: boolean;
}

const SSN = '123-45-6789';

const cases: Case[] = [
  {
    family: 'not-null violation, failing row',
    source: 'executor/execMain.c ExecConstraints',
    code: '23502',
    message: 'null value in column "name" of relation "scrub_people" violates not-null constraint',
    detail: `Failing row contains (7, null, u7@x.test, ${SSN}).`,
    secret: SSN,
    expectMessage: 'null value in column "name" of relation "scrub_people" violates not-null constraint',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'check violation, failing row',
    source: 'executor/execMain.c ExecConstraints',
    code: '23514',
    message: 'new row for relation "scrub_people" violates check constraint "scrub_people_age_check"',
    detail: `Failing row contains (1, alice, ${SSN}, -3).`,
    secret: SSN,
    expectMessage: 'new row for relation "scrub_people" violates check constraint "scrub_people_age_check"',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'partition constraint violation, failing row',
    source: 'executor/execMain.c ExecPartitionCheckEmitError',
    code: '23514',
    message: 'new row for relation "scrub_parted_1" violates partition constraint',
    detail: `Failing row contains (5, ${SSN}).`,
    secret: SSN,
    expectMessage: 'new row for relation "scrub_parted_1" violates partition constraint',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'no partition for row, partition key',
    source: 'executor/execPartition.c ExecFindPartition',
    code: '23514',
    message: 'no partition of relation "scrub_parted" found for row',
    detail: `Partition key of the failing row contains (ssn) = (${SSN}).`,
    secret: SSN,
    expectMessage: 'no partition of relation "scrub_parted" found for row',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'view WITH CHECK OPTION violation, failing row',
    source: 'executor/execMain.c ExecWithCheckOptions',
    code: '44000',
    message: 'new row violates check option for view "scrub_view"',
    detail: `Failing row contains (3, ${SSN}).`,
    secret: SSN,
    expectMessage: 'new row violates check option for view "scrub_view"',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'unique violation, key',
    source: 'access/nbtree/nbtinsert.c _bt_check_unique + access/index/genam.c BuildIndexValueDescription',
    code: '23505',
    message: 'duplicate key value violates unique constraint "scrub_people_ssn_key"',
    detail: `Key (ssn)=(${SSN}) already exists.`,
    secret: SSN,
    expectMessage: 'duplicate key value violates unique constraint "scrub_people_ssn_key"',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'unique index build, duplicated key',
    source: 'utils/sort/tuplesortvariants.c comparetup_index_btree',
    code: '23505',
    message: 'could not create unique index "scrub_people_ssn_idx"',
    detail: `Key (ssn)=(${SSN}) is duplicated.`,
    secret: SSN,
    expectMessage: 'could not create unique index "scrub_people_ssn_idx"',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'exclusion violation, both keys',
    source: 'executor/execIndexing.c check_exclusion_or_unique_constraint',
    code: '23P01',
    message: 'conflicting key value violates exclusion constraint "scrub_booking_excl"',
    detail: `Key (room, who)=(1, ${SSN}) conflicts with existing key (room, who)=(1, 987-65-4321).`,
    secret: SSN,
    expectMessage: 'conflicting key value violates exclusion constraint "scrub_booking_excl"',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'exclusion constraint build, both keys',
    source: 'executor/execIndexing.c check_exclusion_or_unique_constraint',
    code: '23P01',
    message: 'could not create exclusion constraint "scrub_booking_excl"',
    detail: `Key (who)=(${SSN}) conflicts with key (who)=(${SSN}).`,
    secret: SSN,
    expectMessage: 'could not create exclusion constraint "scrub_booking_excl"',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'foreign key violation on insert, missing key',
    source: 'utils/adt/ri_triggers.c ri_ReportViolation',
    code: '23503',
    message: 'insert or update on table "scrub_orders" violates foreign key constraint "scrub_orders_ssn_fkey"',
    detail: `Key (ssn)=(${SSN}) is not present in table "scrub_people".`,
    secret: SSN,
    expectMessage: 'insert or update on table "scrub_orders" violates foreign key constraint "scrub_orders_ssn_fkey"',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'foreign key violation on delete, referenced key',
    source: 'utils/adt/ri_triggers.c ri_ReportViolation',
    code: '23503',
    message:
      'update or delete on table "scrub_people" violates foreign key constraint "scrub_orders_ssn_fkey" on table "scrub_orders"',
    detail: `Key (ssn)=(${SSN}) is still referenced from table "scrub_orders".`,
    secret: SSN,
    expectMessage: 'update or delete on table "scrub_people" violates a foreign key constraint of another table',
    expectDetail: WITHHELD_DETAIL,
    dropsNames: true,
  },
  {
    family: 'foreign key violation on detaching a partition',
    source: 'utils/adt/ri_triggers.c ri_ReportViolation (partgone)',
    code: '23503',
    message: 'removing partition "scrub_people_1" violates foreign key constraint "scrub_orders_ssn_fkey"',
    detail: `Key (ssn)=(${SSN}) is still referenced from table "scrub_orders".`,
    secret: SSN,
    expectMessage: 'removing partition "scrub_people_1" violates foreign key constraint "scrub_orders_ssn_fkey"',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'class 23 DETAIL of a form we do not know (a translation, a newer server)',
    source: 'fail closed',
    code: '23505',
    message: 'doppelter Schlüsselwert verletzt Unique-Constraint »scrub_people_ssn_key«',
    detail: `Schlüssel existiert bereits: ${SSN}.`,
    secret: SSN,
    expectMessage: 'doppelter Schlüsselwert verletzt Unique-Constraint »scrub_people_ssn_key«',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'invalid integer input',
    source: 'utils/adt/numutils.c pg_strtoint32',
    code: '22P02',
    message: `invalid input syntax for type integer: "${SSN}"`,
    secret: SSN,
    expectMessage: `invalid input syntax for type integer: "${REDACTED_VALUE}"`,
  },
  {
    family: 'invalid bigint input',
    source: 'utils/adt/numutils.c pg_strtoint64 (int8in)',
    code: '22P02',
    message: `invalid input syntax for type bigint: "${SSN}"`,
    secret: SSN,
    expectMessage: `invalid input syntax for type bigint: "${REDACTED_VALUE}"`,
  },
  {
    family: 'integer out of range',
    source: 'utils/adt/numutils.c pg_strtoint16/32/64',
    code: '22003',
    message: 'value "123456789012" is out of range for type integer',
    secret: '123456789012',
    expectMessage: `value "${REDACTED_VALUE}" is out of range for type integer`,
  },
  {
    family: 'float out of range',
    source: 'utils/adt/float.c float8in_internal',
    code: '22003',
    message: '"1e99999" is out of range for type double precision',
    secret: '1e99999',
    expectMessage: `"${REDACTED_VALUE}" is out of range for type double precision`,
  },
  {
    family: 'invalid numeric input',
    source: 'utils/adt/numeric.c numeric_in',
    code: '22P02',
    message: `invalid input syntax for type numeric: "${SSN}"`,
    secret: SSN,
    expectMessage: `invalid input syntax for type numeric: "${REDACTED_VALUE}"`,
  },
  {
    family: 'invalid boolean input',
    source: 'utils/adt/bool.c boolin',
    code: '22P02',
    message: `invalid input syntax for type boolean: "${SSN}"`,
    secret: SSN,
    expectMessage: `invalid input syntax for type boolean: "${REDACTED_VALUE}"`,
  },
  {
    family: 'invalid uuid input',
    source: 'utils/adt/uuid.c string_to_uuid',
    code: '22P02',
    message: `invalid input syntax for type uuid: "${SSN}"`,
    secret: SSN,
    expectMessage: `invalid input syntax for type uuid: "${REDACTED_VALUE}"`,
  },
  {
    family: 'invalid date input',
    source: 'utils/adt/datetime.c DateTimeParseError (DTERR_BAD_FORMAT)',
    code: '22007',
    message: `invalid input syntax for type date: "${SSN}"`,
    secret: SSN,
    expectMessage: `invalid input syntax for type date: "${REDACTED_VALUE}"`,
  },
  {
    family: 'date/time field out of range, with its hint',
    source: 'utils/adt/datetime.c DateTimeParseError (DTERR_MD_FIELD_OVERFLOW)',
    code: '22008',
    message: 'date/time field value out of range: "1987-31-12"',
    hint: 'Perhaps you need a different "datestyle" setting.',
    secret: '1987-31-12',
    expectMessage: `date/time field value out of range: "${REDACTED_VALUE}"`,
  },
  {
    family: 'interval field out of range',
    source: 'utils/adt/datetime.c DateTimeParseError (DTERR_INTERVAL_OVERFLOW)',
    code: '22015',
    message: 'interval field value out of range: "9999999999 years"',
    secret: '9999999999 years',
    expectMessage: `interval field value out of range: "${REDACTED_VALUE}"`,
  },
  {
    family: 'time zone displacement out of range',
    source: 'utils/adt/datetime.c DateTimeParseError (DTERR_TZDISP_OVERFLOW)',
    code: '22009',
    message: 'time zone displacement out of range: "2024-01-01 00:00+99"',
    secret: '2024-01-01 00:00+99',
    expectMessage: `time zone displacement out of range: "${REDACTED_VALUE}"`,
  },
  {
    family: 'date out of range',
    source: 'utils/adt/date.c date_in',
    code: '22008',
    message: 'date out of range: "5874898-01-01"',
    secret: '5874898-01-01',
    expectMessage: `date out of range: "${REDACTED_VALUE}"`,
  },
  {
    family: 'timestamp out of range',
    source: 'utils/adt/timestamp.c timestamp_in',
    code: '22008',
    message: 'timestamp out of range: "294277-01-01"',
    secret: '294277-01-01',
    expectMessage: `timestamp out of range: "${REDACTED_VALUE}"`,
  },
  {
    family: 'unknown time zone',
    source: 'utils/adt/datetime.c DateTimeParseError (DTERR_BAD_TIMEZONE)',
    code: '22023',
    message: `time zone "${SSN}" not recognized`,
    secret: SSN,
    expectMessage: `time zone "${REDACTED_VALUE}" not recognized`,
  },
  {
    family: 'to_date field value',
    source: 'utils/adt/formatting.c from_char_parse_int_len',
    code: '22007',
    message: 'invalid value "ss" for "MM"',
    detail: 'Value must be an integer.',
    secret: '"ss"',
    expectMessage: `invalid value "${REDACTED_VALUE}" for "MM"`,
    expectDetail: 'Value must be an integer.',
  },
  {
    family: 'malformed array literal, detail kept',
    source: 'utils/adt/arrayfuncs.c array_in',
    code: '22P02',
    message: `malformed array literal: "{${SSN}"`,
    detail: 'Unexpected end of input.',
    secret: SSN,
    expectMessage: `malformed array literal: "${REDACTED_VALUE}"`,
    expectDetail: 'Unexpected end of input.',
  },
  {
    family: 'malformed record literal',
    source: 'utils/adt/rowtypes.c record_in',
    code: '22P02',
    message: `malformed record literal: "${SSN}"`,
    detail: 'Missing left parenthesis.',
    secret: SSN,
    expectMessage: `malformed record literal: "${REDACTED_VALUE}"`,
    expectDetail: 'Missing left parenthesis.',
  },
  {
    family: 'malformed range literal',
    source: 'utils/adt/rangetypes.c range_parse',
    code: '22P02',
    message: `malformed range literal: "${SSN}"`,
    detail: 'Missing left parenthesis or bracket.',
    secret: SSN,
    expectMessage: `malformed range literal: "${REDACTED_VALUE}"`,
    expectDetail: 'Missing left parenthesis or bracket.',
  },
  {
    family: 'invalid enum input',
    source: 'utils/adt/enum.c enum_in',
    code: '22P02',
    message: `invalid input value for enum scrub_mood: "${SSN}"`,
    secret: SSN,
    expectMessage: `invalid input value for enum scrub_mood: "${REDACTED_VALUE}"`,
  },
  {
    family: 'a value holding quotes is redacted whole',
    source: 'utils/adt/numutils.c pg_strtoint32',
    code: '22P02',
    message: 'invalid input syntax for type integer: "12" secret "34"',
    secret: 'secret',
    expectMessage: `invalid input syntax for type integer: "${REDACTED_VALUE}"`,
  },
  {
    family: 'out of range value holding quotes',
    source: 'utils/adt/numutils.c pg_strtoint32',
    code: '22003',
    message: 'value "12" secret "34" is out of range for type integer',
    secret: 'secret',
    expectMessage: `value "${REDACTED_VALUE}" is out of range for type integer`,
  },
  {
    family: 'invalid byte sequence',
    source: 'utils/mb/mbutils.c report_invalid_encoding',
    code: '22021',
    message: 'invalid byte sequence for encoding "UTF8": 0xe9 0x20 0x61',
    secret: '0xe9',
    expectMessage: `invalid byte sequence for encoding "UTF8": ${REDACTED_VALUE}`,
  },
  {
    family: 'untranslatable character',
    source: 'utils/mb/mbutils.c report_untranslatable_char',
    code: '22P05',
    message: 'character with byte sequence 0xe2 0x82 0xac in encoding "UTF8" has no equivalent in encoding "LATIN1"',
    secret: '0xe2',
    expectMessage: `character with byte sequence ${REDACTED_VALUE} in encoding "UTF8" has no equivalent in encoding "LATIN1"`,
  },
  {
    family: 'invalid hexadecimal digit',
    source: 'utils/adt/encode.c get_hex',
    code: '22023',
    message: 'invalid hexadecimal digit: "z"',
    secret: '"z"',
    expectMessage: `invalid hexadecimal digit: "${REDACTED_VALUE}"`,
  },
  {
    family: 'invalid binary digit',
    source: 'utils/adt/varbit.c bit_in',
    code: '22P02',
    message: '"7" is not a valid binary digit',
    secret: '"7"',
    expectMessage: `"${REDACTED_VALUE}" is not a valid binary digit`,
  },
  {
    family: 'chr() argument',
    source: 'utils/adt/oracle_compat.c chr',
    code: '54000',
    message: 'requested character too large for encoding: 1234567',
    secret: '1234567',
    // Class 54: not a class whose messages quote row values; left as is.
    expectMessage: 'requested character too large for encoding: 1234567',
  },
  {
    family: 'invalid json, token and context',
    source: 'utils/adt/jsonfuncs.c / common/jsonapi.c json_errdetail, report_json_context',
    code: '22P02',
    message: 'invalid input syntax for type json',
    detail: `Token "${SSN}" is invalid.`,
    where: `JSON data, line 1: {"ssn": ${SSN}...`,
    secret: SSN,
    expectMessage: 'invalid input syntax for type json',
    expectDetail: `Token "${REDACTED_VALUE}" is invalid.`,
    keepsWhere: false,
  },
  {
    family: 'invalid xml, libxml detail with the input line',
    source: 'utils/adt/xml.c xml_ereport',
    code: '2200N',
    message: 'invalid XML content',
    detail: `line 1: Start tag expected, '<' not found\n${SSN}\n^`,
    secret: SSN,
    expectMessage: 'invalid XML content',
    expectDetail: WITHHELD_DETAIL,
  },
  {
    family: 'COPY FROM column context',
    source: 'commands/copyfromparse.c CopyFromErrorCallback',
    code: '22P02',
    message: `invalid input syntax for type integer: "${SSN}"`,
    where: `COPY scrub_people, line 1, column age: "${SSN}"`,
    secret: SSN,
    expectMessage: `invalid input syntax for type integer: "${REDACTED_VALUE}"`,
    keepsWhere: false,
  },
  {
    family: 'COPY FROM line context on a unique violation',
    source: 'commands/copyfromparse.c CopyFromErrorCallback',
    code: '23505',
    message: 'duplicate key value violates unique constraint "scrub_people_ssn_key"',
    detail: `Key (ssn)=(${SSN}) already exists.`,
    where: `COPY scrub_people, line 2: "2\tbob\t${SSN}"`,
    secret: SSN,
    expectMessage: 'duplicate key value violates unique constraint "scrub_people_ssn_key"',
    expectDetail: WITHHELD_DETAIL,
    keepsWhere: false,
  },
  {
    family: 'PL/pgSQL context of a named function is withheld (it names the function and quotes its source)',
    source: 'pl/plpgsql/src/pl_exec.c plpgsql_exec_error_callback',
    code: '23505',
    message: 'duplicate key value violates unique constraint "scrub_people_ssn_key"',
    detail: `Key (ssn)=(${SSN}) already exists.`,
    where:
      'SQL statement "INSERT INTO scrub_people VALUES ($1)"\nPL/pgSQL function scrub_add(text) line 3 at SQL statement',
    secret: SSN,
    expectMessage: 'duplicate key value violates unique constraint "scrub_people_ssn_key"',
    expectDetail: WITHHELD_DETAIL,
    keepsWhere: false,
  },
];

describe('scrubErrorFrame: every family of value-carrying message', () => {
  it.each(cases.map((c) => [c.family, c] as const))('%s', (_family, c) => {
    const extra: Fields = [];
    if (c.detail !== undefined) extra.push(['D', c.detail]);
    if (c.hint !== undefined) extra.push(['H', c.hint]);
    if (c.where !== undefined) extra.push(['W', c.where]);
    const raw = error(c.code, c.message, [
      ...extra,
      ['s', 'public'],
      ['t', 'scrub_people'],
      ['F', 'x.c'],
      ['L', '42'],
      ['R', 'fn'],
    ]);
    const scrubbed = scrubErrorFrame(frameOf(raw)) ?? raw;
    const pg = parseWithPg(scrubbed);
    expect(pg.name).toBe('error');
    expect(pg.code).toBe(c.code);
    expect(pg.severity).toBe('ERROR');
    expect(pg.message).toBe(c.expectMessage);
    expect(pg.detail).toBe(c.expectDetail);
    expect(pg.hint).toBe(c.hint);
    if (c.where !== undefined) expect(pg.where).toBe(c.keepsWhere ? c.where : undefined);
    expect(pg.schema).toBe(c.dropsNames ? undefined : 'public');
    expect(pg.table).toBe(c.dropsNames ? undefined : 'scrub_people');
    expect(pg.file).toBe('x.c');
    expect(pg.line).toBe('42');
    expect(pg.routine).toBe('fn');
    if (c.code.startsWith('22') || c.code.startsWith('23') || c.code.startsWith('44')) {
      expect(scrubbed.toString('utf8')).not.toContain(c.secret);
    }
  });
});

describe('scrubErrorFrame: messages without values are left alone', () => {
  const clean: [string, Buffer][] = [
    [
      'undefined table with position',
      error('42P01', 'relation "secrets" does not exist', [
        ['P', '15'],
        ['F', 'parse_relation.c'],
        ['L', '1392'],
        ['R', 'parserOpenTable'],
      ]),
    ],
    ['syntax error', error('42601', 'syntax error at or near "SELEC"', [['P', '1']])],
    [
      'not-null violation without permission to see the row (no DETAIL)',
      error('23502', 'null value in column "ssn" of relation "scrub_people" violates not-null constraint', [
        ['s', 'public'],
        ['t', 'scrub_people'],
        ['c', 'ssn'],
        ['n', 'x'],
      ]),
    ],
    [
      'duplicate keys without permission',
      error('23505', 'could not create unique index "i"', [['D', 'Duplicate keys exist.']]),
    ],
    [
      'exclusion conflict without permission',
      error('23P01', 'conflicting key value violates exclusion constraint "e"', [
        ['D', 'Key conflicts with existing key.'],
      ]),
    ],
    [
      'MATCH FULL',
      error('23503', 'insert or update on table "a" violates foreign key constraint "f"', [
        ['D', 'MATCH FULL does not allow mixing of null and nonnull key values.'],
      ]),
    ],
    [
      'numeric field overflow with its detail',
      error('22003', 'numeric field overflow', [
        ['D', 'A field with precision 5, scale 2 must round to an absolute value less than 10^3.'],
      ]),
    ],
    ['division by zero', error('22012', 'division by zero')],
    [
      'deadlock',
      error('40P01', 'deadlock detected', [
        [
          'D',
          'Process 1 waits for ShareLock on transaction 2; blocked by process 3.\nProcess 3 waits for ShareLock on transaction 4; blocked by process 1.',
        ],
        ['H', 'See server log for query details.'],
      ]),
    ],
    ['statement timeout', error('57014', 'canceling statement due to statement timeout')],
    [
      'notice: relation exists',
      message('N', [
        ['S', 'NOTICE'],
        ['V', 'NOTICE'],
        ['C', '42P07'],
        ['M', 'relation "scrub_people" already exists, skipping'],
      ]),
    ],
    [
      'FATAL admin shutdown',
      message('E', [
        ['S', 'FATAL'],
        ['V', 'FATAL'],
        ['C', '57P01'],
        ['M', 'terminating connection due to administrator command'],
      ]),
    ],
  ];
  it.each(clean)('%s', (_name, raw) => {
    expect(scrubErrorFrame(frameOf(raw))).toBeUndefined();
  });

  it('ignores frames of other types', () => {
    const row = typed('D', new Bytes().i16(1).i32(SSN.length).str(SSN));
    expect(scrubErrorFrame(frameOf(row))).toBeUndefined();
  });
});

describe('scrubErrorFrame: re-encoding', () => {
  it('keeps every other field byte for byte and in order, and the result reads back with pg-protocol', () => {
    const raw = error('23505', 'duplicate key value violates unique constraint "Kunden_ßsn_key"', [
      ['D', `Key (ßsn)=(${SSN}) already exists.`],
      ['s', 'public'],
      ['t', 'Kunden'],
      ['n', 'Kunden_ßsn_key'],
      ['F', 'nbtinsert.c'],
      ['L', '664'],
      ['R', '_bt_check_unique'],
    ]);
    const out = scrubErrorFrame(frameOf(raw));
    expect(out).toBeDefined();
    const buf = out as Buffer;
    expect(buf[0]).toBe(0x45);
    expect(fieldsOf(buf)).toEqual([
      ['S', 'ERROR'],
      ['V', 'ERROR'],
      ['C', '23505'],
      ['M', 'duplicate key value violates unique constraint "Kunden_ßsn_key"'],
      ['D', WITHHELD_DETAIL],
      ['s', 'public'],
      ['t', 'Kunden'],
      ['n', 'Kunden_ßsn_key'],
      ['F', 'nbtinsert.c'],
      ['L', '664'],
      ['R', '_bt_check_unique'],
    ]);
    // The unchanged fields are the original bytes: only DETAIL's differ, so the rest of the frame lines up.
    const detailStart = raw.indexOf(Buffer.from(`DKey (`));
    expect(buf.subarray(5, detailStart).equals(raw.subarray(5, detailStart))).toBe(true);
    const tailRaw = raw.subarray(raw.indexOf(Buffer.from('spublic')));
    expect(buf.subarray(buf.length - tailRaw.length).equals(tailRaw)).toBe(true);
    const pg = parseWithPg(buf);
    expect(pg).toMatchObject({
      name: 'error',
      severity: 'ERROR',
      code: '23505',
      detail: WITHHELD_DETAIL,
      schema: 'public',
      table: 'Kunden',
      constraint: 'Kunden_ßsn_key',
      routine: '_bt_check_unique',
    });
  });

  it('keeps name fields holding invalid UTF-8 exactly as sent', () => {
    const b = new Bytes()
      .str('S')
      .cstr('ERROR')
      .str('C')
      .cstr('23505')
      .str('M')
      .cstr('duplicate key value violates unique constraint "k"');
    b.str('D').cstr(`Key (a)=(${SSN}) already exists.`).str('t').raw([0x41, 0xff, 0x42]).u8(0).u8(0);
    const raw = typed('E', b);
    const out = scrubErrorFrame(frameOf(raw)) as Buffer;
    expect(out.includes(Buffer.from([0x74, 0x41, 0xff, 0x42, 0x00, 0x00]))).toBe(true);
    expect(out.toString('latin1')).not.toContain(SSN);
  });

  it('scrubs a NoticeResponse and keeps it a notice', () => {
    const raw = message('N', [
      ['S', 'NOTICE'],
      ['V', 'NOTICE'],
      ['C', '00000'],
      ['M', 'row rejected'],
      ['D', `Failing row contains (1, ${SSN}).`],
    ]);
    const out = scrubErrorFrame(frameOf(raw)) as Buffer;
    expect(out[0]).toBe(0x4e);
    expect(parseWithPg(out)).toMatchObject({
      name: 'notice',
      severity: 'NOTICE',
      code: '00000',
      message: 'row rejected',
      detail: WITHHELD_DETAIL,
    });
  });

  it('drops a HINT or internal query that quotes a row, and a MESSAGE that does is replaced', () => {
    const raw = error('P0001', `Key (ssn)=(${SSN}) is bad`, [
      ['H', `Failing row contains (${SSN}).`],
      ['q', `SELECT (ssn)=('${SSN}')`],
      ['p', '3'],
    ]);
    const out = scrubErrorFrame(frameOf(raw)) as Buffer;
    const pg = parseWithPg(out);
    expect(pg.code).toBe('P0001');
    expect(pg.hint).toBeUndefined();
    expect(pg.internalQuery).toBeUndefined();
    expect(out.toString('utf8')).not.toContain(SSN);
  });

  it('drops a HINT naming a column PostgreSQL matched by itself, and a 2BP01 DETAIL listing dependants; keeps other hints', () => {
    const missing = error('42703', 'column "ss" does not exist', [
      ['P', '8'],
      ['H', 'Perhaps you meant to reference the column "people.ssn".'],
    ]);
    const m = parseWithPg(scrubErrorFrame(frameOf(missing)) as Buffer);
    expect(m.message).toBe('column "ss" does not exist');
    expect(m.position).toBe('8');
    expect(m.hint).toBeUndefined();
    const dependants = error('2BP01', 'cannot drop table dep because other objects depend on it', [
      ['D', 'view hidden.payroll depends on table dep'],
      ['H', 'Use DROP ... CASCADE to drop the dependent objects too.'],
    ]);
    const d = parseWithPg(scrubErrorFrame(frameOf(dependants)) as Buffer);
    expect(d.message).toBe('cannot drop table dep because other objects depend on it');
    expect(d.detail).toBe(WITHHELD_DEPENDANTS);
    expect(d.hint).toBe('Use DROP ... CASCADE to drop the dependent objects too.');
    const other = error('42883', 'function f(integer) does not exist', [
      ['H', 'No function matches the given name and argument types. You might need to add explicit type casts.'],
    ]);
    expect(scrubErrorFrame(frameOf(other))).toBeUndefined();
  });

  it("names neither table of a foreign key but the one written: the key's DETAIL without its table, the referencing table's name fields dropped", () => {
    const ins = error('23503', 'insert or update on table "a" violates foreign key constraint "a_b_fkey"', [
      ['D', 'Key is not present in table "b".'],
      ['t', 'a'],
      ['n', 'a_b_fkey'],
    ]);
    const i = parseWithPg(scrubErrorFrame(frameOf(ins)) as Buffer);
    expect(i.message).toBe('insert or update on table "a" violates foreign key constraint "a_b_fkey"');
    expect(i.detail).toBe('Key is not present in the referenced table.');
    expect(i.table).toBe('a');
    const del = error(
      '23503',
      'update or delete on table "b" violates foreign key constraint "a_b_fkey" on table "a"',
      [
        ['D', 'Key is still referenced from table "a".'],
        ['s', 'public'],
        ['t', 'a'],
        ['n', 'a_b_fkey'],
      ],
    );
    const out = scrubErrorFrame(frameOf(del)) as Buffer;
    const d = parseWithPg(out);
    expect(d.message).toBe('update or delete on table "b" violates a foreign key constraint of another table');
    expect(d.detail).toBe('Key is still referenced from another table.');
    expect(d.table).toBeUndefined();
    expect(d.constraint).toBeUndefined();
    expect(out.toString('utf8')).not.toContain('a_b_fkey');
  });

  it("keeps the CONTEXT of the client's own DO block, withholds one that reaches a named function", () => {
    const own = error('P0001', 'boom', [['W', 'PL/pgSQL function inline_code_block line 3 at RAISE']]);
    expect(scrubErrorFrame(frameOf(own))).toBeUndefined();
    const reached = error('22012', 'division by zero', [
      [
        'W',
        'PL/pgSQL function hidden_fn() line 1 at RETURN\nSQL statement "SELECT hidden_fn()"\nPL/pgSQL function inline_code_block line 1 at PERFORM',
      ],
    ]);
    expect(parseWithPg(scrubErrorFrame(frameOf(reached)) as Buffer).where).toBeUndefined();
    for (const where of [
      'SQL expression "1/0"\nPL/pgSQL function hidden_fn() line 1 at RETURN',
      'SQL function "hidden_sql" statement 1',
      'PL/Python function "hidden_py"',
    ]) {
      const raw = error('22012', 'division by zero', [['W', where]]);
      expect(parseWithPg(scrubErrorFrame(frameOf(raw)) as Buffer).where, where).toBeUndefined();
    }
  });

  it('drops field types the protocol does not define', () => {
    const raw = error('XX000', 'odd', [['Z', SSN]]);
    const out = scrubErrorFrame(frameOf(raw)) as Buffer;
    expect(fieldsOf(out)).toEqual([
      ['S', 'ERROR'],
      ['V', 'ERROR'],
      ['C', 'XX000'],
      ['M', 'odd'],
    ]);
  });

  it('replaces a malformed body instead of passing text it cannot check', () => {
    for (const body of [
      new Bytes().str('M').str(SSN),
      new Bytes().str('M').cstr(SSN),
      new Bytes().str('M').cstr(SSN).u8(0).str('x'),
    ]) {
      const out = scrubErrorFrame(frameOf(typed('E', body))) as Buffer;
      expect(parseWithPg(out)).toMatchObject({ name: 'error', code: 'XX000' });
      expect(out.toString('utf8')).not.toContain(SSN);
    }
  });
});

describe('scrubForwarded', () => {
  it('swaps the forwarded original for the scrubbed copy and reports the change', () => {
    const raw = error('23505', 'duplicate key value violates unique constraint "k"', [
      ['D', `Key (ssn)=(${SSN}) already exists.`],
    ]);
    const before = Buffer.from('before');
    const out = [before, raw];
    expect(scrubForwarded(frameOf(raw), out, 1)).toBe(true);
    expect(out[0]).toBe(before);
    expect(out[1]).not.toBe(raw);
    expect(parseWithPg(out[1] as Buffer).detail).toBe(WITHHELD_DETAIL);
  });

  it('leaves the array alone when there is nothing to scrub, or the tracker did not forward the original', () => {
    const clean = error('42P01', 'relation "x" does not exist');
    const out1 = [clean];
    expect(scrubForwarded(frameOf(clean), out1, 0)).toBe(false);
    expect(out1[0]).toBe(clean);
    const dirty = error('23505', 'duplicate key value violates unique constraint "k"', [
      ['D', `Key (ssn)=(${SSN}) already exists.`],
    ]);
    const replaced = [Buffer.from('pgwarden refusal')];
    expect(scrubForwarded(frameOf(dirty), replaced, 0)).toBe(false);
    expect(scrubForwarded(frameOf(dirty), [], 0)).toBe(false);
  });
});
