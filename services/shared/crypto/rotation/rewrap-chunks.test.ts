import { describe, expect, it } from "vitest";
import type { Logger } from "pino";
import { createMemoryQueues } from "../../coordination/memory-queues.js";
import { open, seal } from "../envelope.js";
import { memorySet, ring } from "../../../../test/support/sealed-rows.js";
import { rowsOffPrimary } from "./rewrap.js";
import { enqueueRewrapChunks, enqueueSettledScan, KEY_REWRAP_QUEUE, runKeyRewrapWorker } from "./rewrap-chunks.js";

const SETTLE_MS = 600;
const ctx = (id: string) => ({ table: "t", column: "c", id });

async function until(check: () => boolean | Promise<boolean>, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("chunked rewrap of private keys", () => {
  it("queues, once every process has re-read the primary, the keys sealed under the old version after the rotation's scan", async () => {
    const set = memorySet(120);
    const stop = new AbortController();
    const queue = createMemoryQueues(Date.now, stop.signal).queue(KEY_REWRAP_QUEUE);
    const scans: string[] = [];
    const logger = {
      info: (o: { reason?: string }) => {
        if (o.reason !== undefined) scans.push(o.reason);
      },
      debug: () => undefined,
      warn: () => undefined,
      error: () => undefined,
    } as unknown as Logger;
    // What RotateMasterKey does: the chunks of every row off the new primary, and the scan due
    // once every process has re-read it.
    const queued = await enqueueRewrapChunks({ sets: [set], queue, primary: 2, chunkRows: 50 });
    expect(queued).toEqual({ rows: 120, chunks: 3 });
    const rotatedAt = Date.now();
    await enqueueSettledScan(queue, "rotate", SETTLE_MS);
    const worker = runKeyRewrapWorker({ queue, sets: () => [set], ring: () => ring(2), consumer: "w1", idleClaimMs: 60_000, signal: stop.signal, logger, settleMs: SETTLE_MS });
    try {
      await until(async () => (await rowsOffPrimary([set], 2)) === 0);
      // A key service that has not yet re-read the primary seals a new private key under the
      // old version, in a range the chunks have already passed.
      set.rows.set("row-0000a", seal(ring(1), Buffer.from("late key"), ctx("row-0000a")));
      expect(await rowsOffPrimary([set], 2)).toBe(1);
      await until(async () => (await rowsOffPrimary([set], 2)) === 0);
      expect(Date.now() - rotatedAt).toBeGreaterThanOrEqual(SETTLE_MS);
      expect(open(ring(2), set.rows.get("row-0000a")!, ctx("row-0000a")).toString()).toBe("late key");
      expect(scans).toEqual(["rotate-settled"]);
    } finally {
      stop.abort();
      await worker.catch(() => undefined);
    }
  });

  it("finishes a rotation made elsewhere (a scan entry from the vault) with a settled scan of its own", async () => {
    const set = memorySet(10);
    const stop = new AbortController();
    const queue = createMemoryQueues(Date.now, stop.signal).queue(KEY_REWRAP_QUEUE);
    const scans: string[] = [];
    const logger = {
      info: (o: { reason?: string }) => {
        if (o.reason !== undefined) scans.push(o.reason);
      },
      debug: () => undefined,
      warn: () => undefined,
      error: () => undefined,
    } as unknown as Logger;
    await queue.enqueue({ scan: "vault-rotate", primary: "2" });
    const worker = runKeyRewrapWorker({ queue, sets: () => [set], ring: () => ring(2), consumer: "w1", idleClaimMs: 60_000, signal: stop.signal, logger, settleMs: SETTLE_MS });
    try {
      await until(async () => (await rowsOffPrimary([set], 2)) === 0);
      set.rows.set("row-0003a", seal(ring(1), Buffer.from("late key"), ctx("row-0003a")));
      await until(async () => (await rowsOffPrimary([set], 2)) === 0);
      expect(scans).toEqual(["vault-rotate", "vault-rotate-settled"]);
      // The settled scan queues no further scan: a rotation ends.
      await new Promise((r) => setTimeout(r, SETTLE_MS + 200));
      expect(scans).toEqual(["vault-rotate", "vault-rotate-settled"]);
    } finally {
      stop.abort();
      await worker.catch(() => undefined);
    }
  });
});
