/**
 * Preloaded into a bench's keymesh processes (`node --expose-gc --import bench/live-heap.mjs`)
 * when KEYMESH_BENCH_HEAP_DIR is set: every second it runs a full garbage collection and
 * appends `<unix ms> <heap used bytes> <external bytes> <rss bytes>` to
 * `$KEYMESH_BENCH_HEAP_DIR/live-heap.<pid>.log`. What survives a full collection is what the
 * process holds; peak RSS also counts the headroom V8 gives its heap between collections.
 * The collections cost CPU: timings of such a run are not comparable with others.
 */
import { appendFileSync } from "node:fs";
import { join } from "node:path";

const dir = process.env.KEYMESH_BENCH_HEAP_DIR;
const gc = globalThis.gc;
if (dir && typeof gc === "function") {
  const file = join(dir, `live-heap.${process.pid}.log`);
  setInterval(() => {
    gc();
    const m = process.memoryUsage();
    appendFileSync(file, `${Date.now()} ${m.heapUsed} ${m.external} ${m.rss}\n`);
  }, 1000).unref();
}
