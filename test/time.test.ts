/**
 * The ISO-8601 time written out by core/time.ts is the runtime's
 * `toISOString()`, byte for byte, over random instants of years 0000-9999,
 * the boundaries, and what it hands back to the runtime.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isoTime } from '../src/core/time.js';

test('isoTime is toISOString for random instants across years 0000-9999 and at the edges', () => {
  let seed = 20261207;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const min = new Date('0000-01-01T00:00:00.000Z').getTime();
  const max = new Date('9999-12-31T23:59:59.999Z').getTime();
  for (let i = 0; i < 20_000; i++) {
    const ms = Math.floor(min + rand() * (max - min));
    assert.equal(isoTime(ms), new Date(ms).toISOString(), String(ms));
  }
  const edges = [0, -1, 1, 999, 1000, min, min - 1, max, max + 1, Date.UTC(2000, 1, 29, 23, 59, 59, 999), Date.UTC(1900, 2, 1), Date.UTC(2100, 1, 28, 12), 8.64e15, -8.64e15, 1.5, Date.now()];
  for (const ms of edges) assert.equal(isoTime(ms), new Date(ms).toISOString(), String(ms));
  assert.throws(() => isoTime(Number.NaN), RangeError, 'not a time: the runtime throws, as toISOString does');
});
