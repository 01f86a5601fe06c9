// Rows the shipped revocation table accepts are all enforced: an empty or 5,000-character reason, identifiers far
// over 1,024 characters, an 'infinity' expiry (these rows used to be skipped with a warning).
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { REVOCATION_TABLE_SQL, TableRevocations } from '../../proxy/revocation/table.ts';
import { MAX_REASON } from '../../proxy/revocation/source.ts';
import { identityFactory } from '../helpers/revocation.ts';

// Its own schema: other files use pgwarden_admin and may run at the same time.
const SCHEMA = 'pgwarden_admin_values';
const TABLE = 'revocations';
const T = `${SCHEMA}.${TABLE}`;

const id = identityFactory({ sub: 'alice', jti: 'jti-x' });

let admin: pg.Client;
let src: TableRevocations | undefined;

beforeAll(async () => {
  admin = new pg.Client({ connectionString: inject('pg').superUrl });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
  await admin.query(REVOCATION_TABLE_SQL(SCHEMA, TABLE));
  await admin.query(`GRANT USAGE ON SCHEMA ${SCHEMA} TO pgwarden; GRANT SELECT ON ${T} TO pgwarden`);
});
afterAll(async () => {
  await src?.close();
  await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
  await admin.end();
});

describe('every row the table accepts revokes', () => {
  it('empty and long reasons, long identifiers, infinity expiry', async () => {
    const longJti = 'j'.repeat(20_000);
    const longSub = 's'.repeat(5_000);
    const longAgent = 'a'.repeat(60_000);
    await admin.query(
      `INSERT INTO ${T} (jti, sub, agent, reason, expires_at) VALUES
        ($1, NULL, NULL, '', NULL),
        (NULL, $2, NULL, repeat('r', 5000), 'infinity'),
        (NULL, NULL, $3, NULL, now() + interval '1 hour')`,
      [longJti, longSub, longAgent],
    );
    const logs: string[] = [];
    const info = inject('pg');
    src = await TableRevocations.open({
      connection: {
        host: info.host,
        port: info.port,
        user: 'pgwarden',
        password: info.upstreamPassword,
        database: 'app',
      },
      schema: SCHEMA,
      table: TABLE,
      refreshMs: 0,
      log: (_level, msg) => logs.push(msg),
    });
    expect(src.entries).toHaveLength(3);
    expect(src.match(id({ jti: longJti }))).toEqual({ reason: 'jti revoked' });
    expect(src.match(id({ sub: longSub }))?.reason).toHaveLength(MAX_REASON);
    expect(src.match(id({ agent: longAgent }))).toEqual({ reason: 'agent revoked' });
    expect(src.match(id())).toBeUndefined();
    expect(logs.filter((m) => /ignor|invalid/.test(m))).toEqual([]);
  });
});
