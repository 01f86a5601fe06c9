// Backend encoders (against hand-built bytes and pg-protocol's client parser) and decoders of upstream messages.
import { Parser } from 'pg-protocol/dist/parser.js';
import { describe, expect, it } from 'vitest';
import { ProxyError } from '../../../lib/errors.ts';
import {
  decodeAuthentication,
  decodeBackendKeyData,
  decodeCommandComplete,
  decodeErrorFields,
  decodeNegotiateProtocolVersion,
  decodeParameterStatus,
  decodeReadyForQuery,
  encodeAuthenticationCleartextPassword,
  encodeAuthenticationOk,
  encodeBackendKeyData,
  encodeBindComplete,
  encodeCloseComplete,
  encodeCommandComplete,
  encodeEmptyQueryResponse,
  encodeErrorResponse,
  encodeNegotiateProtocolVersion,
  encodeNoData,
  encodeNoticeResponse,
  encodeParameterStatus,
  encodeParseComplete,
  encodeProxyError,
  encodeReadyForQuery,
  encodeSSLResponse,
  readCommandTagRows,
} from '../../../proxy/wire/backend.ts';
import { Bytes, typed } from '../../helpers/bytes.ts';
import { expectProtocolError } from '../../helpers/errors.ts';

/** What node-postgres would make of our bytes: an independent reader of backend messages. */
function parseWithPg(buf: Buffer): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  new Parser().parse(buf, (msg) => out.push(msg as unknown as Record<string, unknown>));
  return out;
}

/** Body of a hand-built typed message. */
const bodyOf = (msg: Buffer): Buffer => msg.subarray(5);

describe('backend encoders', () => {
  it('encodes ErrorResponse with S, V, C, M, D, H, P in order', () => {
    const buf = encodeErrorResponse({
      severity: 'ERROR',
      sqlstate: '42501',
      message: 'denied',
      detail: 'd',
      hint: 'h',
      position: 7,
    });
    const expected = typed(
      'E',
      new Bytes()
        .str('S')
        .cstr('ERROR')
        .str('V')
        .cstr('ERROR')
        .str('C')
        .cstr('42501')
        .str('M')
        .cstr('denied')
        .str('D')
        .cstr('d')
        .str('H')
        .cstr('h')
        .str('P')
        .cstr('7')
        .u8(0),
    );
    expect(buf.equals(expected)).toBe(true);
    const [parsed] = parseWithPg(buf);
    expect(parsed).toMatchObject({
      name: 'error',
      severity: 'ERROR',
      code: '42501',
      message: 'denied',
      detail: 'd',
      hint: 'h',
      position: '7',
    });
  });

  it('leaves out optional fields that are not given', () => {
    const buf = encodeErrorResponse({ severity: 'FATAL', sqlstate: '08P01', message: 'bad' });
    expect(
      buf.equals(
        typed(
          'E',
          new Bytes().str('S').cstr('FATAL').str('V').cstr('FATAL').str('C').cstr('08P01').str('M').cstr('bad').u8(0),
        ),
      ),
    ).toBe(true);
  });

  it('encodes NoticeResponse with the same fields', () => {
    const buf = encodeNoticeResponse({ severity: 'WARNING', sqlstate: '01000', message: 'row cap reached' });
    expect(buf[0]).toBe('N'.charCodeAt(0));
    expect(parseWithPg(buf)[0]).toMatchObject({
      name: 'notice',
      severity: 'WARNING',
      code: '01000',
      message: 'row cap reached',
    });
  });

  it('encodes a ProxyError with only its client-safe fields', () => {
    const err = new ProxyError('ERR_STATEMENT_DENIED', 'permission denied by policy', {
      hint: 'ask',
      cause: new Error('secret internals'),
    });
    const buf = encodeProxyError(err);
    const fields = decodeErrorFields(bodyOf(buf));
    expect(fields).toMatchObject({
      severity: 'ERROR',
      sqlstate: '42501',
      message: 'permission denied by policy; hint: ask (reason=policy_denied)',
      hint: 'ask',
    });
    expect(buf.toString('latin1')).not.toContain('secret');
    const fatal = decodeErrorFields(bodyOf(encodeProxyError(new ProxyError('ERR_PROTOCOL', 'x'))));
    expect(fatal.severity).toBe('FATAL');
    expect(fatal.sqlstate).toBe('08P01');
  });

  it('never throws on a NUL in error text, and never lets it end a field early', () => {
    const buf = encodeErrorResponse({ severity: 'ERROR', sqlstate: '42501', message: 'role "a\0b" denied' });
    expect(decodeErrorFields(bodyOf(buf)).message).toBe('role "a\uFFFDb" denied');
  });

  it('refuses a malformed SQLSTATE as misuse', () => {
    expect(() => encodeErrorResponse({ severity: 'ERROR', sqlstate: '4250', message: 'x' })).toThrow(TypeError);
    expect(() => encodeErrorResponse({ severity: 'ERROR', sqlstate: '42a01', message: 'x' })).toThrow(TypeError);
  });

  it('encodes ReadyForQuery, Authentication, ParameterStatus, BackendKeyData', () => {
    expect(encodeReadyForQuery('I').equals(typed('Z', new Bytes().str('I')))).toBe(true);
    expect(encodeReadyForQuery('E').equals(typed('Z', new Bytes().str('E')))).toBe(true);
    expect(parseWithPg(encodeReadyForQuery('T'))[0]).toMatchObject({ name: 'readyForQuery', status: 'T' });
    expect(encodeAuthenticationOk().equals(typed('R', new Bytes().i32(0)))).toBe(true);
    expect(encodeAuthenticationCleartextPassword().equals(typed('R', new Bytes().i32(3)))).toBe(true);
    expect(parseWithPg(encodeAuthenticationCleartextPassword())[0]).toMatchObject({
      name: 'authenticationCleartextPassword',
    });
    expect(
      encodeParameterStatus('server_version', '17.0').equals(
        typed('S', new Bytes().cstr('server_version').cstr('17.0')),
      ),
    ).toBe(true);
    expect(
      encodeBackendKeyData(1234, Buffer.from([1, 2, 3, 4])).equals(typed('K', new Bytes().i32(1234).u8(1, 2, 3, 4))),
    ).toBe(true);
    expect(parseWithPg(encodeBackendKeyData(1234, Buffer.from([0, 0, 0, 9])))[0]).toMatchObject({
      name: 'backendKeyData',
      processID: 1234,
      secretKey: 9,
    });
    expect(encodeBackendKeyData(1, Buffer.alloc(32, 5)).length).toBe(5 + 4 + 32);
    expect(() => encodeBackendKeyData(1, Buffer.alloc(2))).toThrow(RangeError);
  });

  it('encodes NegotiateProtocolVersion and CommandComplete', () => {
    const npv = encodeNegotiateProtocolVersion(0, ['_pq_.foo', '_pq_.bar']);
    expect(npv.equals(typed('v', new Bytes().i32(0).i32(2).cstr('_pq_.foo').cstr('_pq_.bar')))).toBe(true);
    expect(encodeCommandComplete('SELECT 3').equals(typed('C', new Bytes().cstr('SELECT 3')))).toBe(true);
    expect(parseWithPg(encodeCommandComplete('SELECT 3'))[0]).toMatchObject({
      name: 'commandComplete',
      text: 'SELECT 3',
    });
  });

  it('encodes the empty messages and the one-byte SSL answer', () => {
    expect(encodeEmptyQueryResponse().equals(typed('I'))).toBe(true);
    expect(encodeParseComplete().equals(typed('1'))).toBe(true);
    expect(encodeBindComplete().equals(typed('2'))).toBe(true);
    expect(encodeCloseComplete().equals(typed('3'))).toBe(true);
    expect(encodeNoData().equals(typed('n'))).toBe(true);
    expect(encodeSSLResponse(true).equals(Buffer.from('S'))).toBe(true);
    expect(encodeSSLResponse(false).equals(Buffer.from('N'))).toBe(true);
  });
});

describe('backend decoders', () => {
  it('decodes ErrorResponse fields, preferring V for severity and keeping every field', () => {
    const body = new Bytes()
      .str('S')
      .cstr('FEHLER')
      .str('V')
      .cstr('ERROR')
      .str('C')
      .cstr('42P01')
      .str('M')
      .cstr('relation "x" does not exist')
      .str('P')
      .cstr('15')
      .str('R')
      .cstr('parserOpenTable')
      .u8(0)
      .build();
    const fields = decodeErrorFields(body);
    expect(fields).toMatchObject({ severity: 'ERROR', sqlstate: '42P01', message: 'relation "x" does not exist' });
    expect(fields.detail).toBeUndefined();
    expect(fields.fields.get('R')).toBe('parserOpenTable');
    expect(fields.fields.get('P')).toBe('15');
    // Without V (servers before 9.6), S is used.
    expect(
      decodeErrorFields(new Bytes().str('S').cstr('NOTICE').str('C').cstr('00000').str('M').cstr('hi').u8(0).build())
        .severity,
    ).toBe('NOTICE');
  });

  it('rejects an ErrorResponse that is unterminated, truncated, trailing or missing required fields', () => {
    expectProtocolError(() =>
      decodeErrorFields(new Bytes().str('S').cstr('ERROR').str('C').cstr('XX000').str('M').cstr('m').build()),
    );
    expectProtocolError(() => decodeErrorFields(new Bytes().str('S').cstr('ERROR').str('C').str('XX000').build()));
    expectProtocolError(() =>
      decodeErrorFields(new Bytes().str('S').cstr('ERROR').str('C').cstr('XX000').str('M').cstr('m').u8(0, 0).build()),
    );
    expectProtocolError(() =>
      decodeErrorFields(new Bytes().str('S').cstr('ERROR').str('C').cstr('XX000').u8(0).build()),
    );
    expectProtocolError(() => decodeErrorFields(Buffer.alloc(0)));
  });

  it('decodes ParameterStatus, CommandComplete and ReadyForQuery', () => {
    expect(decodeParameterStatus(new Bytes().cstr('TimeZone').cstr('UTC').build())).toEqual({
      name: 'TimeZone',
      value: 'UTC',
    });
    expectProtocolError(() => decodeParameterStatus(new Bytes().cstr('TimeZone').build()));
    expectProtocolError(() => decodeParameterStatus(new Bytes().cstr('a').cstr('b').u8(1).build()));
    expect(decodeCommandComplete(new Bytes().cstr('INSERT 0 3').build())).toBe('INSERT 0 3');
    expectProtocolError(() => decodeCommandComplete(new Bytes().str('INSERT').build()));
    for (const s of ['I', 'T', 'E'] as const) expect(decodeReadyForQuery(Buffer.from(s))).toBe(s);
    expectProtocolError(() => decodeReadyForQuery(Buffer.from('X')));
    expectProtocolError(() => decodeReadyForQuery(Buffer.from('II')));
    expectProtocolError(() => decodeReadyForQuery(Buffer.alloc(0)));
  });

  it('decodes BackendKeyData with a 4-byte or longer key, as a copy', () => {
    const body = new Bytes().i32(77).u8(1, 2, 3, 4).build();
    const msg = decodeBackendKeyData(body);
    expect(msg).toEqual({ processId: 77, secretKey: Buffer.from([1, 2, 3, 4]) });
    body[4] = 9;
    expect(msg.secretKey[0]).toBe(1);
    expect(decodeBackendKeyData(new Bytes().i32(1).raw(Buffer.alloc(32, 3)).build()).secretKey.length).toBe(32);
    expectProtocolError(() => decodeBackendKeyData(new Bytes().i32(1).u8(1, 2, 3).build()));
    expectProtocolError(() => decodeBackendKeyData(new Bytes().i32(1).raw(Buffer.alloc(257)).build()));
    expectProtocolError(() => decodeBackendKeyData(Buffer.alloc(2)));
  });

  it('decodes Authentication requests with their data', () => {
    expect(decodeAuthentication(new Bytes().i32(0).build())).toEqual({ code: 0, data: Buffer.alloc(0) });
    expect(decodeAuthentication(new Bytes().i32(5).u8(1, 2, 3, 4).build())).toEqual({
      code: 5,
      data: Buffer.from([1, 2, 3, 4]),
    });
    const sasl = decodeAuthentication(
      new Bytes().i32(10).cstr('SCRAM-SHA-256-PLUS').cstr('SCRAM-SHA-256').u8(0).build(),
    );
    expect(sasl.code).toBe(10);
    expect(sasl.data.toString()).toBe('SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0');
    expect(decodeAuthentication(new Bytes().i32(11).str('r=abc,s=xyz,i=4096').build()).data.toString()).toBe(
      'r=abc,s=xyz,i=4096',
    );
    expect(decodeAuthentication(new Bytes().i32(12).str('v=sig').build()).code).toBe(12);
    expectProtocolError(() => decodeAuthentication(new Bytes().i32(0).u8(1).build()));
    expectProtocolError(() => decodeAuthentication(new Bytes().i32(5).u8(1, 2).build()));
    expectProtocolError(() => decodeAuthentication(Buffer.alloc(3)));
  });

  it('decodes NegotiateProtocolVersion and bounds its option count', () => {
    expect(decodeNegotiateProtocolVersion(new Bytes().i32(0).i32(1).cstr('_pq_.x').build())).toEqual({
      newestMinor: 0,
      unsupportedOptions: ['_pq_.x'],
    });
    expectProtocolError(() => decodeNegotiateProtocolVersion(new Bytes().i32(0).i32(0x7fffffff).build()));
    expectProtocolError(() => decodeNegotiateProtocolVersion(new Bytes().i32(0).i32(-1).build()));
  });

  it('reads row counts from command tags', () => {
    const cases: [string, number | undefined][] = [
      ['SELECT 5', 5],
      ['INSERT 0 3', 3],
      ['UPDATE 0', 0],
      ['DELETE 12', 12],
      ['MERGE 2', 2],
      ['COPY 7', 7],
      ['FETCH 2', 2],
      ['MOVE 4', 4],
      ['CREATE TABLE', undefined],
      ['BEGIN', undefined],
      ['SELECT', undefined],
      ['INSERT 3', undefined],
      ['SELECT 5 extra', undefined],
      ['', undefined],
    ];
    for (const [tag, rows] of cases) expect(readCommandTagRows(tag), tag).toBe(rows);
  });
});
