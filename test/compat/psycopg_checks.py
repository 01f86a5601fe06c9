# psycopg 3 compatibility checks: run against one target (COMPAT_* environment), print one JSON line per check.
# Driven by test/compat/psycopg.test.ts, which runs this with Debian's /usr/bin/python3 (python3-psycopg) once
# directly against Postgres and once through pgwarden; every check's assertions are the same for both.
import datetime
import decimal
import socket
import hashlib
import json
import os
import sys
import threading
import time
import traceback
import uuid
from zoneinfo import ZoneInfo

import psycopg
from psycopg import errors, sql
from psycopg.types.json import Json, Jsonb

E = os.environ
SCHEMA = E["COMPAT_SCHEMA"]
CONNINFO = dict(host=E["COMPAT_HOST"], port=int(E["COMPAT_PORT"]), user=E["COMPAT_USER"],
                password=E["COMPAT_PASSWORD"], dbname=E["COMPAT_DATABASE"], connect_timeout=5,
                # 'require' for the run through pgwarden over TLS; explicit so that libpq's default 'prefer' cannot pick.
                sslmode=E.get("COMPAT_SSLMODE", "disable"))
# A superuser session (always direct) that holds a row lock the cancel and timeout checks wait on.
SUPER_DSN = E["COMPAT_SUPER_DSN"]
CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def connect(**kw):
    return psycopg.connect(**{**CONNINFO, **kw})


def t(name):
    return sql.Identifier(SCHEMA, name)


def eq(got, want):
    if got != want:
        raise AssertionError(f"expected {want!r}, got {got!r}")


def sqlstate_of(fn):
    try:
        fn()
    except psycopg.Error as e:
        return e.sqlstate, e
    raise AssertionError("expected an error, got success")


class KvLock:
    """Holds kv 'k100' locked from a superuser session so an UPDATE of it waits without using CPU."""

    def __enter__(self):
        self.c = psycopg.connect(SUPER_DSN)
        self.c.execute(sql.SQL("SELECT * FROM {} WHERE k = 'k100' FOR UPDATE").format(t("kv")))
        return self

    def wait_for_waiter(self):
        deadline = time.time() + 5
        with psycopg.connect(SUPER_DSN, autocommit=True) as w:
            while time.time() < deadline:
                n = w.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                              (f"%{SCHEMA}%kv%",)).fetchone()[0]
                if n > 0:
                    return
                time.sleep(0.02)
        raise AssertionError("the blocked statement never reached the server")

    def __exit__(self, *a):
        self.c.rollback()
        self.c.close()


BLOCKED = sql.SQL("UPDATE {} SET v = v WHERE k = 'k100'").format(t("kv"))


@check
def connect_and_info():
    with connect(application_name="compat-psycopg") as c:
        eq(c.execute("SELECT current_database(), 1 + 1").fetchone(), ("app", 2))
        eq(c.info.parameter_status("client_encoding"), "UTF8")
        eq(c.info.encoding, "utf-8")
        if not c.info.server_version >= 150000:
            raise AssertionError(f"server_version {c.info.server_version}")
        app = c.execute("SHOW application_name").fetchone()[0]
        if not app.endswith("compat-psycopg"):
            raise AssertionError(f"application_name {app!r}")


@check
def backend_pid():
    with connect() as c:
        eq(c.info.backend_pid, c.execute("SELECT pg_backend_pid()").fetchone()[0])


@check
def startup_options():
    # libpq's options (PGOPTIONS): the usual way Python applications set session settings at connect.
    with connect(options="-c statement_timeout=4321 -c lock_timeout=1234") as c:
        eq(c.execute("SHOW statement_timeout").fetchone()[0], "4321ms")
        eq(c.execute("SHOW lock_timeout").fetchone()[0], "1234ms")


@check
def type_round_trips_text():
    with connect() as c:
        row = c.execute(
            "SELECT %s::int, %s::int8, %s::numeric, %s::bool, %s::text, %s::float8, %s::smallint",
            (2147483647, 9223372036854775807, decimal.Decimal("12345678901234567890.123456789"), True,
             "naïve café 日本語 😀 'q' \"d\" \\", 1.5e-7, -32768)).fetchone()
        eq(row, (2147483647, 9223372036854775807, decimal.Decimal("12345678901234567890.123456789"), True,
                 "naïve café 日本語 😀 'q' \"d\" \\", 1.5e-7, -32768))


@check
def type_round_trips_binary():
    with connect() as c:
        blob = bytes(range(256)) * 4
        cur = c.cursor(binary=True)
        row = cur.execute("SELECT %b::int, %b::numeric, %b::text, %b::bytea, %b::uuid, %b::float8",
                          (7, decimal.Decimal("-0.001"), "ü", blob, uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), 2.5)).fetchone()
        eq(row, (7, decimal.Decimal("-0.001"), "ü", blob, uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), 2.5))


@check
def bytea_json_arrays():
    with connect() as c:
        blob = b"\x00\x01\xff\\'" + os.urandom(1000)
        doc = {"a": [1, 2, {"b": "ü"}], "n": None}
        row = c.execute("SELECT %s::bytea, %s::json, %s::jsonb, %s::int[], %s::text[], ARRAY[[1,2],[3,4]]",
                        (blob, Json(doc), Jsonb(doc), [1, None, 3], ["a", "b,c", 'd"e', None, ""])).fetchone()
        eq(row, (blob, doc, doc, [1, None, 3], ["a", "b,c", 'd"e', None, ""], [[1, 2], [3, 4]]))


@check
def timestamps_and_zones():
    with connect() as c:
        c.execute("SET TimeZone = 'America/New_York'")
        when = datetime.datetime(2024, 3, 10, 6, 59, 59, 123000, tzinfo=datetime.timezone.utc)
        row = c.execute("SELECT %s::timestamptz, %s::timestamptz::text, %s::date, %s::timestamp, %s::interval, %s::time",
                        (when, when, datetime.date(2024, 2, 29), datetime.datetime(2000, 1, 1, 12, 0),
                         datetime.timedelta(days=1, seconds=7384, microseconds=500000), datetime.time(23, 59, 59))).fetchone()
        eq(row[0], when)
        eq(row[0].tzinfo, ZoneInfo("America/New_York"))
        eq(row[1], "2024-03-10 01:59:59.123-05")
        eq(row[2:], (datetime.date(2024, 2, 29), datetime.datetime(2000, 1, 1, 12, 0),
                     datetime.timedelta(days=1, seconds=7384, microseconds=500000), datetime.time(23, 59, 59)))


@check
def nulls_and_uuid():
    with connect() as c:
        u = uuid.uuid4()
        eq(c.execute("SELECT %s::uuid, %s::int, %s::text, NULL::jsonb", (u, None, None)).fetchone(), (u, None, None, None))


@check
def server_side_prepare():
    with connect(prepare_threshold=0) as c:
        q = sql.SQL("SELECT v FROM {} WHERE k = %s").format(t("kv"))
        for k in ("k1", "k2", "k3"):
            eq(c.execute(q, (k,)).fetchone(), ("v" + k[1:],))
        eq(c.execute(q, ("k4",), prepare=True).fetchone(), ("v4",))


@check
def prepared_statements_view():
    # psycopg's own prepared-statement tests read the server's view of the session's statements.
    with connect(prepare_threshold=0) as c:
        c.execute("SELECT %s::int", (1,))
        n = c.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT $1::int'").fetchone()[0]
        eq(n, 1)


@check
def pipeline_mode():
    with connect() as c:
        with c.pipeline():
            curs = [c.execute("SELECT %s::int * 2", (i,)) for i in range(30)]
            c.execute(sql.SQL("INSERT INTO {} (id, body) VALUES (%s, %s)").format(t("wide")), (500, "pipelined"))
        eq([cur.fetchone()[0] for cur in curs], [i * 2 for i in range(30)])
        eq(c.execute(sql.SQL("SELECT body FROM {} WHERE id = 500").format(t("wide"))).fetchone(), ("pipelined",))


@check
def executemany_batch():
    with connect() as c:
        with c.cursor() as cur:
            cur.executemany(sql.SQL("INSERT INTO {} (name, qty, price) VALUES (%s, %s, %s)").format(t("items")),
                            [(f"item {i}", i, decimal.Decimal(i) / 4) for i in range(200)])
            eq(cur.rowcount, 200)
        eq(c.execute(sql.SQL("SELECT count(*), sum(qty) FROM {}").format(t("items"))).fetchone(), (200, 19900))


@check
def several_statements_simple_query():
    with connect() as c:
        cur = c.execute("SELECT 1; SELECT 'two'")
        first = cur.fetchall()
        if not cur.nextset():
            raise AssertionError("no second result")
        eq((first, cur.fetchall()), ([(1,)], [("two",)]))


@check
def named_server_cursor():
    with connect() as c:
        with c.transaction():
            with c.cursor(name="compat_cur") as cur:
                cur.itersize = 7
                cur.execute(sql.SQL("SELECT k FROM {} ORDER BY k").format(t("kv")))
                eq(len(cur.fetchmany(10)), 10)
                eq(len(list(cur)), 90)


@check
def scrollable_cursor():
    with connect() as c:
        with c.transaction():
            with c.cursor(name="compat_scroll", scrollable=True) as cur:
                cur.execute("SELECT g FROM generate_series(1, 50) g")
                cur.scroll(40, mode="absolute")
                eq(cur.fetchone(), (41,))
                cur.scroll(-11)
                eq(cur.fetchone(), (31,))


@check
def copy_both_ways():
    with connect() as c:
        with c.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} (id, t, b) FROM STDIN").format(t("copy_t"))) as cp:
                for i in range(1000):
                    cp.write_row((i, f"line {i} ü\ttab", bytes([i % 256])))
            rows = []
            with cur.copy(sql.SQL("COPY (SELECT id, t, b FROM {} WHERE id < 3 ORDER BY id) TO STDOUT").format(t("copy_t"))) as cp:
                cp.set_types(["int4", "text", "bytea"])
                rows = list(cp.rows())
            eq(rows, [(i, f"line {i} ü\ttab", bytes([i])) for i in range(3)])
            with cur.copy(sql.SQL("COPY {} (id, t) FROM STDIN (FORMAT BINARY)").format(t("copy_t"))) as cp:
                cp.set_types(["int4", "text"])
                cp.write_row((5000, "binary"))
            eq(c.execute(sql.SQL("SELECT count(*) FROM {}").format(t("copy_t"))).fetchone(), (1001,))


class HangGuard:
    """Shuts the connection's socket down if the block has not finished within `seconds`, so a driver waiting
    forever gets an error (the check fails naming the hang) instead of stalling the whole run."""

    def __init__(self, conn, seconds):
        self.conn, self.seconds, self.fired = conn, seconds, False

    def _fire(self):
        self.fired = True
        # A duplicate of the descriptor: shutdown reaches the connection, closing ours leaves libpq's alone.
        s = socket.fromfd(self.conn.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM)
        s.shutdown(socket.SHUT_RDWR)
        s.close()

    def __enter__(self):
        self.timer = threading.Timer(self.seconds, self._fire)
        self.timer.start()
        return self

    def __exit__(self, kind, *a):
        self.timer.cancel()
        if self.fired:
            raise AssertionError(f"hung: no answer within {self.seconds} s")


@check
def copy_in_then_out_one_transaction():
    # The reported hang (psycopg 3.1 over TLS through pgwarden): COPY FROM then COPY TO in one transaction. psycopg
    # waits on the socket between reads; a TLS record libpq read only in part left the response's end inside OpenSSL.
    # Results of many sizes, so some end in a record that would have been split (test/integration/session.test.ts
    # checks the record sizes themselves).
    with connect() as c, HangGuard(c, 10):
        with c.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} (id, t, b) FROM STDIN").format(t("copy_t"))) as cp:
                for i in range(3000):
                    cp.write_row((100_000 + i, f"row {i} " + "w" * (i % 400), bytes([i % 256])))
            for n in range(1, 3000, 23):
                q = sql.SQL("COPY (SELECT id, t FROM {} WHERE id >= 100000 AND id < {} ORDER BY id) TO STDOUT").format(
                    t("copy_t"), 100_000 + n)
                with cur.copy(q) as cp:
                    got = sum(1 for _ in cp.rows())
                eq(got, n)
        c.rollback()
        eq(c.execute(sql.SQL("SELECT count(*) FROM {} WHERE id >= 100000").format(t("copy_t"))).fetchone(), (0,))


@check
def copy_out_all_chars():
    # psycopg's own test_copy_out_allchars: every character 1..255 as a literal in the COPY's query text, raw control
    # bytes included (the query is composed client-side).
    chars = [chr(i) for i in range(1, 256)] + ["\u20ac"]
    with connect() as c:
        with c.cursor() as cur:
            q = sql.SQL("COPY (SELECT unnest({}::text[])) TO STDOUT").format(chars)
            with cur.copy(q) as cp:
                cp.set_types(["text"])
                rows = [r[0] for r in cp.rows()]
            eq(rows, chars)


@check
def transactions_and_savepoints():
    with connect() as c:
        with c.transaction():
            c.execute(sql.SQL("INSERT INTO {} VALUES (1, 'outer')").format(t("wide")))
            try:
                with c.transaction():
                    c.execute(sql.SQL("INSERT INTO {} VALUES (2, 'inner')").format(t("wide")))
                    c.execute("SELECT 1 / 0")
            except errors.DivisionByZero:
                pass
            with c.transaction():
                c.execute(sql.SQL("INSERT INTO {} VALUES (3, 'kept')").format(t("wide")))
        eq(c.execute(sql.SQL("SELECT id FROM {} WHERE id < 10 ORDER BY id").format(t("wide"))).fetchall(), [(1,), (3,)])


@check
def isolation_and_read_only():
    with connect() as c:
        c.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        c.read_only = True
        eq(c.execute("SHOW transaction_isolation").fetchone(), ("serializable",))
        code, _ = sqlstate_of(lambda: c.execute(sql.SQL("INSERT INTO {} VALUES (-1, 'no')").format(t("wide"))))
        eq(code, "25006")
        c.rollback()


@check
def notices():
    with connect(autocommit=True) as c:
        got = []
        c.add_notice_handler(lambda d: got.append((d.sqlstate, d.message_primary)))
        c.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t("never_made")))
        eq(got, [("00000", 'table "never_made" does not exist, skipping')])


@check
def error_inside_transaction():
    with connect() as c:
        code, _ = sqlstate_of(lambda: c.execute("SELECT 1 / 0"))
        eq(code, "22012")
        code, _ = sqlstate_of(lambda: c.execute("SELECT 1"))
        eq(code, "25P02")
        c.rollback()
        eq(c.execute("SELECT 1").fetchone(), (1,))


@check
def constraint_error_classes():
    with connect(autocommit=True) as c:
        try:
            c.execute(sql.SQL("INSERT INTO {} VALUES ('k1', 'dup')").format(t("kv")))
            raise AssertionError("no error")
        except errors.UniqueViolation as e:
            eq(e.diag.constraint_name, "kv_pkey")
            eq(e.diag.table_name, "kv")


@check
def syntax_error_class():
    with connect() as c:
        try:
            c.execute("SELECT 1 FROM WHERE")
            raise AssertionError("no error")
        except errors.SyntaxError as e:
            eq(e.diag.statement_position, "15")


@check
def undefined_table_class():
    with connect() as c:
        try:
            c.execute(sql.SQL("SELECT * FROM {}").format(t("nope")))
            raise AssertionError("no error")
        except errors.UndefinedTable:
            pass


@check
def cancel():
    with connect() as c, KvLock() as lock:
        def later():
            try:
                lock.wait_for_waiter()
            finally:
                c.cancel()  # also when the wait failed, so the blocked statement cannot hang the run
        th = threading.Thread(target=later)
        th.start()
        try:
            c.execute(BLOCKED)
            raise AssertionError("not cancelled")
        except errors.QueryCanceled:
            pass
        finally:
            th.join()
        c.rollback()
        eq(c.execute("SELECT 1").fetchone(), (1,))


@check
def statement_timeout_set():
    with connect(autocommit=True) as c, KvLock():
        c.execute("SET statement_timeout = 100")
        try:
            c.execute(BLOCKED)
            raise AssertionError("no timeout")
        except errors.QueryCanceled:
            pass


@check
def pinned_settings_no_op():
    # psycopg's own tests: test_quote_roundtrip[on] sets standard_conforming_strings to the value pgwarden stamps,
    # test_no_result and test_row_factory reset search_path and expect no row; set_config of constants is a SET.
    with connect(autocommit=True) as c:
        path = c.execute("SHOW search_path").fetchone()[0]
        c.execute("SET standard_conforming_strings = on")
        cur = c.cursor()
        cur.execute("reset search_path")
        try:
            cur.fetchone()
            raise AssertionError("a row after RESET")
        except psycopg.ProgrammingError:
            pass
        eq(c.execute("SHOW standard_conforming_strings").fetchone()[0], "on")
        eq(c.execute("SHOW search_path").fetchone()[0], path)
        eq(c.execute("select set_config('TimeZone', 'Pacific/Chatham', false)").fetchone()[0], "Pacific/Chatham")
        eq(c.execute("SHOW TimeZone").fetchone()[0], "Pacific/Chatham")


@check
def listen_notify():
    with connect(autocommit=True) as c:
        got = []
        c.add_notify_handler(got.append)
        c.execute("LISTEN compat_py")
        # Delivered with the NOTIFY's own response (it commits in autocommit); the SELECT flushes anything later.
        c.execute("NOTIFY compat_py, 'payload'")
        c.execute("SELECT 1")
        eq([(n.channel, n.payload, n.pid) for n in got], [("compat_py", "payload", c.info.backend_pid)])


@check
def temp_table():
    with connect() as c:
        c.execute("CREATE TEMP TABLE scratch (id int)")
        c.execute("INSERT INTO scratch SELECT generate_series(1, 3)")
        eq(c.execute("SELECT count(*) FROM scratch").fetchone(), (3,))


@check
def ddl_in_writable_schema():
    with connect(autocommit=True) as c:
        def exists():
            return c.execute("SELECT count(*) FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace "
                             "WHERE n.nspname = %s AND r.relname = 'made'", (SCHEMA,)).fetchone()[0]
        c.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(t("made")))
        c.execute(sql.SQL("CREATE INDEX made_v ON {} (v)").format(t("made")))
        c.execute(sql.SQL("ALTER TABLE {} ADD COLUMN w int").format(t("made")))
        eq(exists(), 1)
        c.execute(sql.SQL("DROP TABLE {}").format(t("made")))
        eq(exists(), 0)


@check
def executemany_after_own_ddl_in_transaction():
    # psycopg's test_leak: in one transaction, DROP and CREATE a table, then executemany into it. executemany is a
    # pipeline (one batch, one Sync); rows with NULLs change the parameter types, so later INSERTs are new statements
    # in the middle of that batch, on a table only this transaction can see (and holds locked).
    with connect() as c:
        with c.transaction(force_rollback=True):
            with c.cursor() as cur:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t("leak")))
                cur.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, a int, b text, c float8)").format(t("leak")))
                rows = [(i, None if i % 3 == 0 else f"b{i}", None if i % 4 == 0 else i / 2) for i in range(12)]
                cur.executemany(sql.SQL("INSERT INTO {} (a, b, c) VALUES (%s, %s, %s)").format(t("leak")), rows)
                eq(cur.execute(sql.SQL("SELECT count(*), count(b), count(c) FROM {}").format(t("leak"))).fetchone(), (12, 8, 9))


@check
def pipeline_setting_before_own_analysis():
    # A SET earlier in a pipeline (inside the transaction psycopg opens) than a statement on a temporary table, which
    # pgwarden analyses on the session's own connection in the middle of the batch: PostgreSQL reports the new
    # TimeZone once, at the next ReadyForQuery, which is the analysis's own; psycopg reads the reported TimeZone to
    # give timestamptz values their zone.
    with connect() as c:
        c.execute("CREATE TEMP TABLE pz (a int)")
        c.commit()
        with c.pipeline():
            c.execute("SET TimeZone = 'Asia/Tokyo'")
            c.execute("INSERT INTO pz VALUES (1)")
            cur = c.execute("SELECT '2024-01-01 00:00+00'::timestamptz, count(*) FROM pz")
        row = cur.fetchone()
        eq(c.pgconn.parameter_status(b"TimeZone"), b"Asia/Tokyo")
        eq(row[0].tzinfo, ZoneInfo("Asia/Tokyo"))
        eq(row[1], 1)
        c.rollback()


@check
def ddl_quoted_type_names():
    # psycopg's own tests quote every type name they compose (sql.Identifier): "numeric", "int4", "varchar", ...
    types = ["numeric", "int4", "varchar", "interval", "timestamp", "time", "bit", "text"]
    cols = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(f"c_{n}"), sql.Identifier(n)) for n in types)
    with connect(autocommit=True) as c:
        c.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, {}, d {} DEFAULT 1.5)").format(
            t("qtypes"), cols, sql.Identifier("numeric")))
        try:
            got = c.execute(sql.SQL("SELECT a.attname, a.atttypid::regtype::text FROM pg_catalog.pg_attribute a "
                                    "WHERE a.attrelid = {}::regclass AND a.attnum > 1 ORDER BY a.attnum").format(
                sql.Literal(f"{SCHEMA}.qtypes"))).fetchall()
            eq(got, [(f"c_{n}", {"int4": "integer", "varchar": "character varying",
                                  "timestamp": "timestamp without time zone", "time": "time without time zone"}.get(n, n))
                     for n in types] + [("d", "numeric")])
        finally:
            c.execute(sql.SQL("DROP TABLE {}").format(t("qtypes")))


@check
def ddl_self_referencing_foreign_key():
    # psycopg's own fixtures make tables whose foreign key references the table itself.
    with connect(autocommit=True) as c:
        c.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, parent int REFERENCES {})").format(t("tree"), t("tree")))
        try:
            c.execute(sql.SQL("INSERT INTO {} VALUES (1, NULL), (2, 1)").format(t("tree")))
            state, _ = sqlstate_of(lambda: c.execute(sql.SQL("INSERT INTO {} VALUES (3, 99)").format(t("tree"))))
            eq(state, "23503")
        finally:
            c.execute(sql.SQL("DROP TABLE {}").format(t("tree")))


@check
def ddl_enum_and_composite_types():
    # psycopg's typeinfo/adapt fixtures: enums (quoted names too) and composites, fetched and registered, then dropped.
    from psycopg.types.composite import CompositeInfo, register_composite
    from psycopg.types.enum import EnumInfo, register_enum
    with connect(autocommit=True) as c:
        c.execute(sql.SQL("CREATE TYPE {} AS ENUM ('foo', 'bar', 'baz')").format(t("prepenum")))
        c.execute(sql.SQL("CREATE TYPE {} AS ENUM ('a', 'b')").format(t("a-b")))
        c.execute(sql.SQL("CREATE TYPE {} AS (a int, b text)").format(t("comp")))
        try:
            info = EnumInfo.fetch(c, f"{SCHEMA}.prepenum")
            eq(info.labels, ["foo", "bar", "baz"])
            register_enum(info, c)
            eq(c.execute(sql.SQL("SELECT 'bar'::{}").format(t("prepenum"))).fetchone()[0].name, "bar")
            c.execute(sql.SQL("ALTER TYPE {} ADD VALUE 'qux'").format(t("prepenum")))
            eq(EnumInfo.fetch(c, f"{SCHEMA}.prepenum").labels, ["foo", "bar", "baz", "qux"])
            eq(EnumInfo.fetch(c, sql.Identifier(SCHEMA, "a-b")).labels, ["a", "b"])
            comp = CompositeInfo.fetch(c, f"{SCHEMA}.comp")
            register_composite(comp, c)
            got = c.execute(sql.SQL("SELECT ROW(1, 'x')::{}").format(t("comp"))).fetchone()[0]
            eq((got.a, got.b), (1, "x"))
        finally:
            c.execute(sql.SQL("DROP TYPE {}, {}, {}").format(t("prepenum"), t("a-b"), t("comp")))


@check
def change_type_in_transaction():
    # psycopg's test_prepared.py test_change_type*: not in autocommit, so the type, the table using it and the INSERT
    # casting a parameter to it all run in one open transaction (prepared at once: prepare_threshold 0), and the type is
    # dropped and made again in it; each round is rolled back, so nothing stays.
    typ, tab = t("txenum"), t("txtable")
    insert = sql.SQL("INSERT INTO {} (bar) VALUES (%(enum_col)s::{}[])").format(tab, typ)
    with connect() as c:
        c.prepare_threshold = 0
        for _ in range(2):
            c.execute(sql.SQL("CREATE TYPE {} AS ENUM ('foo', 'bar', 'baz')").format(typ))
            c.execute(sql.SQL("CREATE TABLE {} (id integer, bar {}[])").format(tab, typ))
            c.cursor().execute(insert, {"enum_col": ["foo"]})
            c.cursor().executemany(insert, [{"enum_col": ["foo"]}, {"enum_col": ["foo", "bar"]}])
            eq(c.execute(sql.SQL("SELECT count(*) FROM {}").format(tab)).fetchone(), (3,))
            c.execute(sql.SQL("DROP TABLE {}").format(tab))
            c.execute(sql.SQL("DROP TYPE {}").format(typ))
            c.execute(sql.SQL("CREATE TYPE {} AS ENUM ('foo', 'bar', 'baz')").format(typ))
            c.execute(sql.SQL("CREATE TABLE {} (id integer, bar {}[])").format(tab, typ))
            c.cursor().execute(insert, {"enum_col": ["baz"]})
            eq(c.execute(sql.SQL("SELECT bar::text[] FROM {}").format(tab)).fetchall(), [(["baz"],)])
            c.rollback()
        eq(c.execute("SELECT count(*) FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n "
                     "ON n.oid = t.typnamespace WHERE n.nspname = %s AND t.typname = 'txenum'", (SCHEMA,)).fetchone(), (0,))


@check
def analyze_vacuum_lock():
    with connect(autocommit=True) as c:
        c.execute(sql.SQL("ANALYZE {}").format(t("items")))
        c.execute(sql.SQL("VACUUM {}").format(t("kv")))
        with c.transaction():
            c.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(t("items")))


@check
def large_text_parameter():
    with connect() as c:
        big = "é" * (512 * 1024)
        eq(c.execute("SELECT length(%s::text), md5(%s::text)", (big, big)).fetchone(),
           (len(big), hashlib.md5(big.encode()).hexdigest()))


@check
def ten_thousand_parameters():
    with connect() as c:
        rows = 5000
        q = sql.SQL("INSERT INTO {} (id, body) VALUES ").format(t("wide")) + sql.SQL(", ").join(
            [sql.SQL("(%s, %s)")] * rows)
        args = []
        for i in range(rows):
            args += [1000 + i, f"row {i}"]
        cur = c.execute(q, args)
        eq(cur.rowcount, rows)


@check
def metadata_queries():
    with connect() as c:
        cols = c.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'items' "
                         "ORDER BY ordinal_position", (SCHEMA,)).fetchall()
        eq([r[0] for r in cols], ["id", "name", "qty", "price", "tags", "meta", "at"])
        # What psycopg's TypeInfo.fetch runs for adapters (composite, enum, range registration use the same).
        from psycopg.types import TypeInfo
        info = TypeInfo.fetch(c, "jsonb")
        eq((info.oid, info.array_oid), (3802, 3807))


@check
def two_phase_commit():
    # psycopg's tpc_*: PREPARE TRANSACTION, COMMIT PREPARED, and tpc_recover's read of pg_prepared_xacts from another
    # connection, which finishes the second transaction with ROLLBACK PREPARED.
    run = uuid.uuid4().hex[:12]
    # Closed, not left by `with`: its exit would call commit(), which psycopg refuses after tpc_prepare().
    c = connect()
    try:
        # Plain-string gids (psycopg's other form), tp-<schema>-: the security corpus's fingerprint leaves tp- gids out,
        # and resetCompatTables rolls back any a failure left prepared.
        c.tpc_begin(f"tp-{SCHEMA}-{run}-a")
        c.execute(sql.SQL("INSERT INTO {} VALUES (700, 'tpc committed')").format(t("wide")))
        c.tpc_prepare()
        c.tpc_commit()
        c.tpc_begin(f"tp-{SCHEMA}-{run}-b")
        c.execute(sql.SQL("INSERT INTO {} VALUES (701, 'tpc rolled back')").format(t("wide")))
        c.tpc_prepare()
    finally:
        c.close()
    with connect() as c2:
        found = [x for x in c2.tpc_recover() if x.gtrid == f"tp-{SCHEMA}-{run}-b"]
        eq(len(found), 1)
        c2.tpc_rollback(found[0])
        eq(c2.execute(sql.SQL("SELECT id FROM {} WHERE id IN (700, 701) ORDER BY id").format(t("wide"))).fetchall(),
           [(700,)])


@check
def function_call():
    with connect() as c:
        eq(c.execute(sql.SQL("SELECT {}(%s)").format(sql.Identifier(SCHEMA, "add_one")), (41,)).fetchone(), (42,))
        eq(c.execute(sql.SQL("SELECT * FROM {}(%s)").format(sql.Identifier(SCHEMA, "add_out")), (1,)).fetchone(), (2, "x1"))


def main():
    only = set(sys.argv[1:])
    for fn in CHECKS:
        if only and fn.__name__ not in only:
            continue
        try:
            fn()
            out = {"name": fn.__name__, "ok": True}
        except Exception as e:  # every failure is reported by name, the run goes on
            state = getattr(e, "sqlstate", None)
            out = {"name": fn.__name__, "ok": False,
                   "error": f"{type(e).__name__}{f' {state}' if state else ''}: {str(e).strip()}"[:500],
                   "where": traceback.format_exc(limit=3)[-600:]}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
