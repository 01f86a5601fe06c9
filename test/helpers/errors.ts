// Assertion helper shared by the wire tests: the call must fail with pgwarden's protocol-violation error.
import { expect } from 'vitest';
import { ProxyError } from '../../lib/errors.ts';

/** Runs `fn` and returns the ProxyError it threw, asserting it is ERR_PROTOCOL / 08P01. */
export function expectProtocolError(fn: () => unknown): ProxyError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ProxyError);
  const err = caught as ProxyError;
  expect(err.code).toBe('ERR_PROTOCOL');
  expect(err.sqlstate).toBe('08P01');
  return err;
}
