import { describe, expect, it, vi } from "vitest";
import { createMemoryQueues } from "../../coordination/memory-queues.js";
import { open, seal } from "../envelope.js";
import { capturingLogger } from "../../../../test/support/log-lines.js";
import { memorySet, ring, rowContext as ctx } from "../../../../test/support/sealed-rows.js";
import { rowsOffPrimary } from "./rewrap.js";
import { enqueueRewrapChunks, enqueueSettledScan, KEY_REWRAP_QUEUE, runKeyRewrapWorker } from "./rewrap-chunks.js";

const SETTLE_MS = 600;

/**
 * A key-rewrap worker on an in-memory queue over `set`, with the primary at version 2; `scans`
 * lists the reasons of the scan entries it has expanded into chunks, in order.
 */
function keyRewrap(set: ReturnType<typeof memorySet>) {
  const stop = new AbortController();
  const queue = createMemoryQueues(Date.now, stop.signal).queue(KEY_REWRAP_QUEUE);
  const { logger, lines } = capturingLogger();
  let worker: Promise<void> | undefined;
  return {
    queue,
    start: () => {
      worker = runKeyRewrapWorker({ queue, sets: () => [set], ring: () => ring(2), consumer: "w1", idleClaimMs: 60_000, signal: stop.signal, logger, settleMs: SETTLE_MS });
    },
    scans: () => lines.filter((l) => l.msg === "private keys off the primary master key queued for rewrap").map((l) => l.reason),
    stop: async () => {
      stop.abort();
      await worker?.catch(() => undefined);
    },
  };
}

/** Waits until every row of `set` is on version 2. */
const allMoved = (set: ReturnType<typeof memorySet>) => vi.waitFor(async () => expect(await rowsOffPrimary([set], 2)).toBe(0), { timeout: 5_000, interval: 10 });

describe("chunked rewrap of private keys", () => {
  it("queues, once every process has re-read the primary, the keys sealed under the old version after the rotation's scan", async () => {
    const set = memorySet(120);
    const rewrap = keyRewrap(set);
    try {
      // What RotateMasterKey does: the chunks of every row off the new primary, and the scan due
      // once every process has re-read it.
      const queued = await enqueueRewrapChunks({ sets: [set], queue: rewrap.queue, primary: 2, chunkRows: 50 });
      expect(queued).toEqual({ rows: 120, chunks: 3 });
      const rotatedAt = Date.now();
      await enqueueSettledScan(rewrap.queue, "rotate", SETTLE_MS);
      rewrap.start();
      await allMoved(set);
      // A key service that has not yet re-read the primary seals a new private key under the
      // old version, in a range the chunks have already passed.
      set.rows.set("row-0000a", seal(ring(1), Buffer.from("late key"), ctx("row-0000a")));
      expect(await rowsOffPrimary([set], 2)).toBe(1);
      await allMoved(set);
      expect(Date.now() - rotatedAt).toBeGreaterThanOrEqual(SETTLE_MS);
      expect(open(ring(2), set.rows.get("row-0000a")!, ctx("row-0000a")).toString()).toBe("late key");
      expect(rewrap.scans()).toEqual(["rotate-settled"]);
    } finally {
      await rewrap.stop();
    }
  });

  it("finishes a rotation made elsewhere (a scan entry from the vault) with a settled scan of its own", async () => {
    const set = memorySet(10);
    const rewrap = keyRewrap(set);
    try {
      await rewrap.queue.enqueue({ scan: "vault-rotate", primary: "2" });
      rewrap.start();
      await allMoved(set);
      set.rows.set("row-0003a", seal(ring(1), Buffer.from("late key"), ctx("row-0003a")));
      await allMoved(set);
      expect(rewrap.scans()).toEqual(["vault-rotate", "vault-rotate-settled"]);
      // The settled scan queues no further scan: a rotation ends.
      await new Promise((r) => setTimeout(r, SETTLE_MS + 200));
      expect(rewrap.scans()).toEqual(["vault-rotate", "vault-rotate-settled"]);
    } finally {
      await rewrap.stop();
    }
  });
});
