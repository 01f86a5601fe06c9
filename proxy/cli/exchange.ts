// `pgwarden token exchange`: asks a token-exchange endpoint (RFC 8693) for a task token and prints it, or the endpoint's error in one line.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseDuration } from '../config/duration.ts';
import { isLoopbackHost } from '../config/load.ts';
import { errorMessage } from '../../lib/error-message.ts';
import { printable } from '../../lib/printable.ts';

export const EXCHANGE_USAGE =
  'pgwarden token exchange --url URL --subject-token-file FILE --role R [--narrow JSON] [--ttl 10m] [--actor-token-file FILE] [--single-use] [--approval-id ID [--wait]] [--json]';

/** Exit code when the request waits for an approval (approval_required, or authorization_pending with --approval-id). */
export const EXIT_PENDING = 3;

const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A failure as the command's result: usage errors exit 2, the endpoint's and the network's 1. */
export function failure(message: string, code = 2): CliResult {
  return { code, stdout: '', stderr: `pgwarden: ${message}\n` };
}

/** A token read from a file (`-`: standard input), trimmed; an empty one is an error naming the option. */
export function readToken(file: string, what: string, stdin: () => string): string {
  const text = file === '-' ? stdin() : readFileSync(file, 'utf8');
  const token = text.trim();
  if (token === '') throw new Error(`${what} is empty`);
  return token;
}

/** The endpoint URL: `/token` appended to a bare base URL; https, or http to a loopback host (a token never crosses a network in clear). */
export function tokenUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`--url ${JSON.stringify(text)} is not a URL`);
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(url.hostname)))
    throw new Error(
      '--url must use https (plain http only to a loopback host): the request carries your identity token',
    );
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/token';
  return url;
}

/**
 * One request to the endpoint and its JSON answer, or the command's result when it cannot be reached or answers
 * something else (exit 1). Redirects are refused and the request gives up after 30 s.
 */
export async function requestJson(
  url: URL,
  init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: string },
): Promise<{ status: number; body: Record<string, unknown> } | { failed: CliResult }> {
  try {
    const res = await fetch(url, { ...init, redirect: 'error', signal: AbortSignal.timeout(30_000) });
    const status = res.status;
    const text = await res.text();
    try {
      return { status, body: JSON.parse(text) as Record<string, unknown> };
    } catch {
      return {
        failed: failure(
          `${url.origin} answered HTTP ${status} without a JSON body; is it a pgwarden exchange endpoint?`,
          1,
        ),
      };
    }
  } catch (err) {
    return { failed: failure(`cannot reach ${url.origin}: ${errorMessage(err)}`, 1) };
  }
}

/** The endpoint's refusal: its error and description in one printable line (exit 1); with --json its body on stdout too. */
export function refusal(status: number, body: Record<string, unknown>, json: boolean): CliResult {
  const error = typeof body.error === 'string' ? body.error : `HTTP ${status}`;
  const description = typeof body.error_description === 'string' ? `: ${body.error_description}` : '';
  return {
    code: 1,
    stdout: json ? `${JSON.stringify(body)}\n` : '',
    stderr: `pgwarden: ${printable(error)}${printable(description)}\n`,
  };
}

/** Runs the command; never throws (every failure is a message and an exit code). */
export async function tokenExchange(
  argv: string[],
  stdin: () => string = () => readFileSync(0, 'utf8'),
): Promise<CliResult> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        url: { type: 'string' },
        'subject-token-file': { type: 'string' },
        'subject-token-type': { type: 'string', default: JWT },
        'actor-token-file': { type: 'string' },
        role: { type: 'string' },
        narrow: { type: 'string' },
        ttl: { type: 'string' },
        audience: { type: 'string' },
        'single-use': { type: 'boolean', default: false },
        'approval-id': { type: 'string' },
        wait: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    return failure(`${errorMessage(err)}\nusage: ${EXCHANGE_USAGE}`);
  }
  const url = values.url as string | undefined;
  const subjectFile = values['subject-token-file'] as string | undefined;
  const role = values.role as string | undefined;
  if (!url || !subjectFile || !role)
    return failure(`--url, --subject-token-file and --role are required\nusage: ${EXCHANGE_USAGE}`);

  const form = new URLSearchParams({
    grant_type: GRANT,
    subject_token_type: values['subject-token-type'] as string,
    role,
  });
  let endpoint: URL;
  try {
    endpoint = tokenUrl(url);
    form.set('subject_token', readToken(subjectFile, '--subject-token-file', stdin));
    const actorFile = values['actor-token-file'] as string | undefined;
    if (actorFile !== undefined) {
      form.set('actor_token', readToken(actorFile, '--actor-token-file', stdin));
      form.set('actor_token_type', JWT);
    }
  } catch (err) {
    return failure(errorMessage(err));
  }
  const narrow = values.narrow as string | undefined;
  if (narrow !== undefined) {
    try {
      JSON.parse(narrow);
    } catch {
      return failure('--narrow is not valid JSON');
    }
    form.set('narrow', narrow);
  }
  const ttl = values.ttl as string | undefined;
  if (ttl !== undefined) {
    const ms = parseDuration(ttl);
    if (ms === undefined || ms < 1000) return failure(`--ttl: not a duration of at least 1s ("${ttl}")`);
    form.set('ttl', String(Math.floor(ms / 1000)));
  }
  if (values['single-use'] === true) form.set('single_use', 'true');
  const audience = values.audience as string | undefined;
  if (audience !== undefined) form.set('audience', audience);
  const approvalId = values['approval-id'] as string | undefined;
  if (approvalId !== undefined) form.set('approval_id', approvalId);
  if (values.wait === true && approvalId === undefined) return failure('--wait needs --approval-id');

  let status: number;
  let body: Record<string, unknown>;
  // --wait: a pending request is asked again every `interval` seconds (RFC 8628 §3.5) until it is decided or expires.
  for (;;) {
    const answer = await requestJson(endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: form.toString(),
    });
    if ('failed' in answer) return answer.failed;
    ({ status, body } = answer);
    if (values.wait !== true || body.error !== 'authorization_pending') break;
    const interval = typeof body.interval === 'number' && body.interval >= 1 ? body.interval : 5;
    await new Promise((r) => setTimeout(r, interval * 1000));
  }
  if (body.error === 'approval_required' || body.error === 'authorization_pending') {
    const id = typeof body.approval_id === 'string' ? body.approval_id : approvalId;
    const next =
      body.error === 'approval_required'
        ? `\napproval id: ${String(id)} (expires ${String(body.expires_at)})\nan approver runs:  pgwarden approve ${String(id)} --url ${endpoint.origin} --token-file APPROVER.jwt\nthen repeat this command with --approval-id ${String(id)} (add --wait to wait for the decision)`
        : '';
    return {
      code: EXIT_PENDING,
      stdout: values.json === true ? `${JSON.stringify(body)}\n` : '',
      stderr: `pgwarden: ${printable(body.error)}: ${printable(body.error_description ?? '')}${next}\n`,
    };
  }
  if (status !== 200 || typeof body.access_token !== 'string') return refusal(status, body, values.json === true);
  return {
    code: 0,
    stdout: values.json === true ? `${JSON.stringify(body, null, 2)}\n` : `${body.access_token}\n`,
    stderr: '',
  };
}
