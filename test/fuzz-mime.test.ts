/**
 * Fuzzing the MIME parser (short run; `npm run soak` runs a million inputs):
 * corpus messages with random damage must parse without a rejection, fit the
 * postgate.email.v1 schema, report only documented parse errors, keep inline
 * content equal to its size and sha256, and give the same result from Buffer
 * and stream input and from both parser paths.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { fixturePath } from './helpers/fixtures.js';
import { checkParse, loadCorpus, mutatedMessageArb } from './fuzz/mime.js';

test('mutated corpus messages: every parser property holds', async () => {
  const corpus = loadCorpus(fixturePath('eml'));
  assert.ok(corpus.length >= 40);
  await fc.assert(
    fc.asyncProperty(mutatedMessageArb(corpus), async (buf) => {
      const problems = await checkParse(buf);
      assert.deepEqual(problems, []);
    }),
    { numRuns: Number(process.env.FUZZ_RUNS ?? 300), seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined },
  );
});
