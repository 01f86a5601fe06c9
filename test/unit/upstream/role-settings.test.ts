// The startup check of pgwarden's upstream role: which recommended settings are missing, and the ALTER ROLE for each.
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { Writable } from 'node:stream';
import { checkRoleSettings, warnAboutRoleSettings } from '../../../proxy/upstream/role-settings.ts';

const fakeQuery =
  (settings: Record<string, string>, role = 'pgwarden', db = 'app') =>
  async () => ({
    rows: Object.entries(settings).map(([name, setting]) => ({ role, db, name, setting })),
  });

function capture(): { logger: pino.Logger; lines: () => { level: number; msg: string; sql?: string }[] } {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      out.push(String(chunk));
      cb();
    },
  });
  return {
    logger: pino({ level: 'info' }, sink),
    lines: () => out.map((l) => JSON.parse(l) as { level: number; msg: string; sql?: string }),
  };
}

describe('role settings', () => {
  it('names every missing setting with an ALTER ROLE … IN DATABASE for it', async () => {
    const r = await checkRoleSettings(
      fakeQuery(
        {
          temp_file_limit: '-1',
          statement_timeout: '0',
          idle_in_transaction_session_timeout: '0',
          work_mem: String(1024 * 1024),
        },
        'Pg Warden',
        'app',
      ),
    );
    expect(r.missing.map((m) => m.name)).toEqual([
      'temp_file_limit',
      'statement_timeout',
      'idle_in_transaction_session_timeout',
      'work_mem',
    ]);
    expect(r.missing[0]?.sql).toBe(`ALTER ROLE "Pg Warden" IN DATABASE app SET temp_file_limit = '5GB';`);
  });

  it('a role with the settings in place gets no warning', async () => {
    const { logger, lines } = capture();
    const r = await warnAboutRoleSettings(
      fakeQuery({
        temp_file_limit: '5242880',
        statement_timeout: '300000',
        idle_in_transaction_session_timeout: '300000',
        work_mem: '65536',
      }),
      logger,
    );
    expect(r?.missing).toEqual([]);
    expect(lines()).toEqual([]);
  });

  it('one warning for several missing settings; a failed read is a warning, never a failed start', async () => {
    const { logger, lines } = capture();
    await warnAboutRoleSettings(
      fakeQuery({
        temp_file_limit: '-1',
        statement_timeout: '0',
        idle_in_transaction_session_timeout: '60000',
        work_mem: '4096',
      }),
      logger,
    );
    expect(lines()).toHaveLength(1);
    expect(lines()[0]?.level).toBe(40);
    expect(lines()[0]?.msg).toContain('lacks settings a DBA should set (temp_file_limit, statement_timeout)');
    const failing = capture();
    await expect(
      warnAboutRoleSettings(async () => {
        throw new Error('permission denied');
      }, failing.logger),
    ).resolves.toBeUndefined();
    expect(failing.lines()[0]?.msg).toBe("could not read the upstream role's settings");
  });
});
