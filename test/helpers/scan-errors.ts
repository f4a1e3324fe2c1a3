/**
 * The assertion both scanner protocol tests make of a failed scan: it is a
 * ScanError of the given kind (docs/scanning.md, "When a scanner fails"),
 * its message matching `re` when given.
 */
import assert from 'node:assert/strict';
import { ScanError } from '../../src/scan/index.js';

export async function rejectsWithScanError(p: Promise<unknown>, kind: ScanError['kind'], re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ScanError, String(e));
    assert.equal(e.kind, kind, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}
