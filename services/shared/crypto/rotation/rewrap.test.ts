import { describe, expect, it, vi } from "vitest";
import { open, seal } from "../envelope.js";
import { createMemoryQueues } from "../../coordination/memory-queues.js";
import { capturingLogger } from "../../../../test/support/log-lines.js";
import { memorySet, ring, rowContext as ctx } from "../../../../test/support/sealed-rows.js";
import { rewrapSets, rowsOffPrimary, runRewrapWorker } from "./rewrap.js";

describe("rewrap", () => {
  it("moves every row to the primary in batches, and a bounded pass stops at its limit", async () => {
    const set = memorySet(25);
    const first = await rewrapSets([set], { ring: () => ring(2), limit: 10, batchSize: 4 });
    expect([first.rewrapped, first.remaining]).toEqual([10, 15]);
    const rest = await rewrapSets([set], { ring: () => ring(2), batchSize: 4 });
    expect([rest.rewrapped, rest.remaining]).toEqual([15, 0]);
    for (const [key, sealed] of set.rows) expect(open(ring(2), sealed, ctx(key)).toString()).toMatch(/^value \d+$/);
  });

  it("lets a concurrent writer win the compare-and-set, and leaves rows it cannot open alone", async () => {
    let wrote = false;
    const set = memorySet(6, (rows) => {
      if (wrote) return;
      wrote = true;
      // A writer replaces row 0 under the old key between the scan and the write.
      rows.set("row-0000", seal(ring(1), Buffer.from("newer"), ctx("row-0000")));
    });
    set.rows.set("row-0005", Buffer.concat([set.rows.get("row-0005")!.subarray(0, 20), Buffer.alloc(20)])); // tampered
    const r = await rewrapSets([set], { ring: () => ring(2) });
    expect({ rewrapped: r.rewrapped, raced: r.raced, failed: r.failed }).toEqual({ rewrapped: 4, raced: 1, failed: 1 });
    expect(open(ring(2), set.rows.get("row-0000")!, ctx("row-0000")).toString()).toBe("newer");
    // The next pass picks up the row the writer touched; the tampered one stays off the primary.
    const again = await rewrapSets([set], { ring: () => ring(2) });
    expect(again.rewrapped).toBe(1);
    expect(await rowsOffPrimary([set], 2)).toBe(1);
  });

  it("runs the background rewrap again while rows it could move are left, and once more when every process has re-read the primary", async () => {
    let late = true;
    const set = memorySet(6, (rows) => {
      if (!late) return;
      late = false;
      // A writer that sealed under the old key before the rotation stores its row after the
      // pass scanned past it (row-0000 sorts first): this pass cannot see it.
      rows.set("row-0000a", seal(ring(1), Buffer.from("late"), ctx("row-0000a")));
    });
    set.rows.set("row-0005", Buffer.concat([set.rows.get("row-0005")!.subarray(0, 20), Buffer.alloc(20)])); // tampered
    const stop = new AbortController();
    const queue = createMemoryQueues(Date.now, stop.signal).queue("test.rewrap");
    const { logger, lines } = capturingLogger("info");
    const passes = () => lines.filter((l) => l.msg === "rewrap pass done").map((l) => l.pass);
    const passesReach = (n: number) => vi.waitFor(() => expect(passes()).toHaveLength(n), { timeout: 5_000, interval: 10 });
    const worker = runRewrapWorker({ queue, sets: () => [set], ring: () => ring(2), refresh: async () => undefined, consumer: "c1", signal: stop.signal, logger, settleMs: 1_000 });

    // The second pass, 200 ms after the first, moves the late row; the tampered one stays.
    await passesReach(2);
    expect(open(ring(2), set.rows.get("row-0000a")!, ctx("row-0000a")).toString()).toBe("late");
    expect(await rowsOffPrimary([set], 2)).toBe(1);
    // A process that has not re-read the primary yet seals one more row under the old key:
    // the pass after the settle time moves it, and nothing runs after that.
    set.rows.set("row-0001a", seal(ring(1), Buffer.from("stale"), ctx("row-0001a")));
    await passesReach(3);
    await new Promise((r) => setTimeout(r, 500));
    stop.abort();
    await worker;
    expect(open(ring(2), set.rows.get("row-0001a")!, ctx("row-0001a")).toString()).toBe("stale");
    expect(await rowsOffPrimary([set], 2)).toBe(1); // the tampered row, left alone
    expect(passes()).toEqual([1, 2, 3]);
  });
});
