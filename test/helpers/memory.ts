/**
 * Memory a process really holds: heap and buffers that survive full
 * collections, forced on demand (no --expose-gc needed on the command line).
 */
import v8 from 'node:v8';
import vm from 'node:vm';

let gc: (() => void) | undefined;

/** Heap used plus external memory after collections with turns of the event loop between. */
export async function heldMemory(): Promise<number> {
  if (!gc) {
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc') as () => void;
  }
  // Buffers' backing stores are freed after the collection that finds them
  // dead: collect a few times with turns of the event loop between.
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}
