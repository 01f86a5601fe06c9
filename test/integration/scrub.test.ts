// Errors Postgres raises about rows never carry a denied column's values to the client: SQLSTATE and message do, the values do not.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { WITHHELD_DETAIL } from '../../proxy/session/scrub.ts';
import { connectPg, pgError, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

// Values only the database knows: the role may not read ssn, and no statement below names it.
const ALICE_SSN = '111-22-3333';
const REGISTRY_SSN = '555-66-7777';
const SECRETS = [ALICE_SSN, REGISTRY_SSN];

const POLICY = `roles:
  scrubber:
    readOnly: false
    relations: [public.scrub_people, public.scrub_registry, public.scrub_claims]
    write:
      statements: [insert, update, delete]
      relations: [public.scrub_people, public.scrub_registry, public.scrub_claims]
    deniedColumns:
      public.scrub_people: [ssn]
      public.scrub_registry: [ssn]
      public.scrub_claims: [ssn]
`;

const SETUP = `
DROP TABLE IF EXISTS public.scrub_claims, public.scrub_registry, public.scrub_people CASCADE;
DROP FUNCTION IF EXISTS public.scrub_people_check_ssn();
CREATE TABLE public.scrub_people (
  id int PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL,
  age int NOT NULL DEFAULT 30 CONSTRAINT scrub_people_age_check CHECK (age >= 0),
  ssn text NOT NULL DEFAULT '000-00-0000',
  CONSTRAINT scrub_people_email_ssn_key UNIQUE (email, ssn)
);
-- Two people share an SSN under different emails; giving one the other's email collides on (email, ssn).
INSERT INTO public.scrub_people VALUES (1, 'alice', 'a@x.test', 41, '${ALICE_SSN}'), (2, 'alias', 'b@x.test', 41, '${ALICE_SSN}');
-- A trigger that reads ssn as a number, so a cast error quotes a stored value the statement never named.
CREATE FUNCTION public.scrub_people_check_ssn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.name = 'cast me' THEN
    PERFORM NEW.ssn::int;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER scrub_people_check_ssn BEFORE UPDATE ON public.scrub_people FOR EACH ROW EXECUTE FUNCTION public.scrub_people_check_ssn();
CREATE TABLE public.scrub_registry (ssn text PRIMARY KEY, label text NOT NULL);
CREATE TABLE public.scrub_claims (id int PRIMARY KEY, ssn text NOT NULL DEFAULT '999-99-9999' REFERENCES public.scrub_registry (ssn));
INSERT INTO public.scrub_registry VALUES ('${REGISTRY_SSN}', 'primary');
INSERT INTO public.scrub_claims VALUES (1, '${REGISTRY_SSN}');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.scrub_people, public.scrub_registry, public.scrub_claims TO pgwarden;
`;

let tp: TestProxy;
let client: pg.Client;

beforeAll(async () => {
  const su = await superClient();
  try {
    await su.query(SETUP);
  } finally {
    await su.end();
  }
  // The proxy reads the catalog at start, so the tables exist first.
  tp = await startTestProxy({ policy: POLICY });
  client = await connectPg(tp, await tp.token({ role: 'scrubber' }));
});

afterAll(async () => {
  await client?.end().catch(() => {});
  await tp?.close();
  const su = await superClient();
  try {
    await su.query(
      'DROP TABLE IF EXISTS public.scrub_claims, public.scrub_registry, public.scrub_people CASCADE; DROP FUNCTION IF EXISTS public.scrub_people_check_ssn();',
    );
  } finally {
    await su.end();
  }
});

type PgError = Awaited<ReturnType<typeof pgError>> & {
  where?: string;
  constraint?: string;
  table?: string;
  column?: string;
};

/** Asserts that no secret appears in any part of the error the client received. */
function expectNoSecret(err: PgError): void {
  const raw = JSON.stringify({ ...err, message: err.message });
  for (const secret of SECRETS) {
    expect(err.message).not.toContain(secret);
    expect(err.detail ?? '').not.toContain(secret);
    expect(err.where ?? '').not.toContain(secret);
    expect(err.hint ?? '').not.toContain(secret);
    expect(raw).not.toContain(secret);
  }
}

describe('value-carrying upstream errors are scrubbed', () => {
  it('the role really cannot read ssn (so the errors below are the only way it could learn it)', async () => {
    const err = await pgError(() => client.query('SELECT ssn FROM scrub_people'));
    expect(err.code).toBe('42501');
  });

  it('unique violation: SQLSTATE, message and constraint name pass; the key values do not', async () => {
    const err = (await pgError(() =>
      client.query(`UPDATE scrub_people SET email = 'a@x.test' WHERE id = 2`),
    )) as PgError;
    expect(err.code).toBe('23505');
    expect(err.message).toBe('duplicate key value violates unique constraint "scrub_people_email_ssn_key"');
    expect(err.constraint).toBe('scrub_people_email_ssn_key');
    expect(err.table).toBe('scrub_people');
    expect(err.detail).toBe(WITHHELD_DETAIL);
    expectNoSecret(err);
  });

  it('check violation: the failing row is withheld', async () => {
    const err = (await pgError(() => client.query('UPDATE scrub_people SET age = -1 WHERE id = 1'))) as PgError;
    expect(err.code).toBe('23514');
    expect(err.message).toBe('new row for relation "scrub_people" violates check constraint "scrub_people_age_check"');
    expect(err.constraint).toBe('scrub_people_age_check');
    expect(err.detail).toBe(WITHHELD_DETAIL);
    expectNoSecret(err);
  });

  it('not-null violation, in the simple and the extended protocol', async () => {
    const simple = (await pgError(() => client.query('UPDATE scrub_people SET name = NULL WHERE id = 1'))) as PgError;
    expect(simple.code).toBe('23502');
    expect(simple.message).toBe('null value in column "name" of relation "scrub_people" violates not-null constraint');
    expect(simple.column).toBe('name');
    expect(simple.detail).toBe(WITHHELD_DETAIL);
    expectNoSecret(simple);
    const extended = (await pgError(() =>
      client.query({ text: 'UPDATE scrub_people SET name = $1 WHERE id = $2', values: [null, 1] }),
    )) as PgError;
    expect(extended.code).toBe('23502');
    expect(extended.detail).toBe(WITHHELD_DETAIL);
    expectNoSecret(extended);
  });

  it('foreign key violations: the referenced key and the missing key are withheld', async () => {
    const del = (await pgError(() => client.query(`DELETE FROM scrub_registry WHERE label = 'primary'`))) as PgError;
    expect(del.code).toBe('23503');
    // The referencing table is not named: the client never wrote it, and its role may not see it.
    expect(del.message).toBe(
      'update or delete on table "scrub_registry" violates a foreign key constraint of another table',
    );
    expect(JSON.stringify(del)).not.toContain('scrub_claims');
    expect(del.detail).toBe(WITHHELD_DETAIL);
    expectNoSecret(del);
    const ins = (await pgError(() => client.query('INSERT INTO scrub_claims (id) VALUES (2)'))) as PgError;
    expect(ins.code).toBe('23503');
    expect(ins.message).toBe(
      'insert or update on table "scrub_claims" violates foreign key constraint "scrub_claims_ssn_fkey"',
    );
    expect(ins.detail).toBe(WITHHELD_DETAIL);
    expect(JSON.stringify(ins)).not.toContain('999-99-9999');
  });

  it('cast error: the stored value quoted in the message is redacted', async () => {
    const err = (await pgError(() => client.query(`UPDATE scrub_people SET name = 'cast me' WHERE id = 1`))) as PgError;
    expect(err.code).toBe('22P02');
    expect(err.message).toBe('invalid input syntax for type integer: "…"');
    // The PL/pgSQL context names a function the client did not write and quotes its source: withheld.
    expect(err.where).toBeUndefined();
    expectNoSecret(err);
  });

  it('a cast error on a literal the client sent is redacted the same way, and the session goes on', async () => {
    const err = await pgError(() => client.query(`SELECT '12-34'::int`));
    expect(err.code).toBe('22P02');
    expect(err.message).toBe('invalid input syntax for type integer: "…"');
    const r = await client.query('SELECT id, name FROM scrub_people ORDER BY id');
    expect(r.rows).toEqual([
      { id: 1, name: 'alice' },
      { id: 2, name: 'alias' },
    ]);
  });

  it('control: the same statements sent straight to Postgres do quote the secrets', async () => {
    const su = await superClient();
    try {
      const statements = [
        `UPDATE scrub_people SET email = 'a@x.test' WHERE id = 2`,
        'UPDATE scrub_people SET age = -1 WHERE id = 1',
        'UPDATE scrub_people SET name = NULL WHERE id = 1',
        `DELETE FROM scrub_registry WHERE label = 'primary'`,
        `UPDATE scrub_people SET name = 'cast me' WHERE id = 1`,
      ];
      for (const sql of statements) {
        const err = (await pgError(() => su.query(sql))) as PgError;
        expect(
          SECRETS.some((s) => `${err.message} ${err.detail ?? ''}`.includes(s)),
          sql,
        ).toBe(true);
      }
    } finally {
      await su.end();
    }
  });

  it('errors without values reach the client unchanged', async () => {
    const err = (await pgError(() => client.query('SELECT nope FROM scrub_people'))) as PgError & { position?: string };
    expect(err.code).toBe('42703');
    expect(err.message).toBe('column "nope" does not exist');
    expect(err.position).toBe('8');
  });

  it('nothing was changed upstream by the failed statements', async () => {
    const su = await superClient();
    try {
      const r = await su.query('SELECT id, name, email, age, ssn FROM scrub_people ORDER BY id');
      expect(r.rows).toEqual([
        { id: 1, name: 'alice', email: 'a@x.test', age: 41, ssn: ALICE_SSN },
        { id: 2, name: 'alias', email: 'b@x.test', age: 41, ssn: ALICE_SSN },
      ]);
      expect((await su.query('SELECT count(*)::int AS n FROM scrub_registry')).rows[0].n).toBe(1);
    } finally {
      await su.end();
    }
  });
});
