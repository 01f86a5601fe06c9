// `pgwarden approve`: an approver lists, shows, approves or denies requests waiting for approval, through the exchange endpoint's approvals API with their IdP token.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { errorMessage } from '../../lib/error-message.ts';
import { failure, readToken, refusal, requestJson, tokenUrl, type CliResult } from './exchange.ts';
import { printable } from '../../lib/printable.ts';

export const APPROVE_USAGE = `pgwarden approve ID --url URL --token-file FILE [--deny] [--reason TEXT] [--json]
  pgwarden approve ID --show --url URL --token-file FILE [--json]
  pgwarden approve --list --url URL --token-file FILE [--json]`;

/** One request as a few lines: who asks, for which role and narrowing, for how long, and where it stands. */
export function describeApproval(raw: Record<string, unknown>): string {
  const a = Object.fromEntries(
    Object.entries(raw).map(([k, v]) => [
      k,
      v === undefined || typeof v === 'boolean'
        ? v
        : printable(typeof v === 'object' && v !== null ? JSON.stringify(v) : v),
    ]),
  ) as Record<string, unknown>;
  const lines = [
    `${String(a.approval_id)}  ${String(a.status)}${a.own === true ? '  (your own request: you cannot decide it)' : ''}`,
    `  subject ${String(a.sub)} (${String(a.subject_issuer)})${a.actor === undefined ? '' : ` acting through ${String(a.actor)}`}${a.tenant === undefined ? '' : `, tenant ${String(a.tenant)}`}`,
    `  role ${String(a.role)} under rule ${String(a.rule)}, ${a.narrow === undefined ? 'not narrowed' : `narrowed to ${String(a.narrow)}`}`,
    `  token: ${String(a.lifetime)} s from its retrieval${a.single_use === true ? ', single-use' : ''}; asked from ${String(a.requester ?? 'an unknown address')} at ${String(a.created_at)}; expires ${String(a.expires_at)}`,
  ];
  if (a.decided_by !== undefined)
    lines.push(
      `  decided by ${String(a.decided_by)} at ${String(a.decided_at)}${a.reason === undefined ? '' : `: ${String(a.reason)}`}`,
    );
  if (a.retrieved_at !== undefined) lines.push(`  retrieved at ${String(a.retrieved_at)}`);
  return lines.join('\n');
}

/** Runs the command; never throws (every failure is a message and an exit code). */
export async function approveCommand(argv: string[]): Promise<CliResult> {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        url: { type: 'string' },
        'token-file': { type: 'string' },
        deny: { type: 'boolean', default: false },
        reason: { type: 'string' },
        list: { type: 'boolean', default: false },
        show: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    return failure(`${errorMessage(err)}\nusage: ${APPROVE_USAGE}`);
  }
  const url = values.url as string | undefined;
  const tokenFile = values['token-file'] as string | undefined;
  if (!url || !tokenFile) return failure(`--url and --token-file are required\nusage: ${APPROVE_USAGE}`);
  const list = values.list === true;
  const id = positionals[0];
  if (list === (id !== undefined) || positionals.length > 1)
    return failure(`give one approval id, or --list\nusage: ${APPROVE_USAGE}`);
  if ((list || values.show === true) && (values.deny === true || values.reason !== undefined))
    return failure('--deny and --reason decide a request; --list and --show only look');

  let base: URL;
  let token: string;
  try {
    base = tokenUrl(url);
    token = readToken(tokenFile, '--token-file', () => readFileSync(0, 'utf8'));
  } catch (err) {
    return failure(errorMessage(err));
  }
  const target = new URL(list ? '/approvals' : `/approvals/${encodeURIComponent(id ?? '')}`, base);
  const decide = !list && values.show !== true;
  const form = new URLSearchParams({ decision: values.deny === true ? 'deny' : 'approve' });
  const reason = values.reason as string | undefined;
  if (reason !== undefined) form.set('reason', reason);

  const answer = await requestJson(target, {
    method: decide ? 'POST' : 'GET',
    headers: {
      authorization: `Bearer ${token}`,
      accept: 'application/json',
      ...(decide ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
    },
    ...(decide ? { body: form.toString() } : {}),
  });
  if ('failed' in answer) return answer.failed;
  const { status, body } = answer;
  if (status !== 200) return refusal(status, body, values.json === true);
  if (values.json === true) return { code: 0, stdout: `${JSON.stringify(body, null, 2)}\n`, stderr: '' };
  if (list) {
    const items = Array.isArray(body.approvals) ? (body.approvals as Record<string, unknown>[]) : [];
    return {
      code: 0,
      stdout:
        items.length === 0 ? 'no requests are waiting for you\n' : `${items.map(describeApproval).join('\n\n')}\n`,
      stderr: '',
    };
  }
  return { code: 0, stdout: `${describeApproval(body)}\n`, stderr: '' };
}
