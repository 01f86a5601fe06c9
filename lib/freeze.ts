// deepFreeze: what config and the decision cache hand out can be shared because nothing can change it afterwards.

/** Freezes `value` and every object reachable from it (already frozen objects are not descended into); returns it. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
