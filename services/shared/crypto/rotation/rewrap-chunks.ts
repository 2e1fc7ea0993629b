import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { JobQueue } from "../../coordination/types.js";
import { failpoint } from "../../failpoints.js";
import type { MasterKeyring } from "../envelope.js";
import { ROTATION_SETTLE_MS } from "./master-key-manager.js";
import { resealed } from "./rewrap.js";
import type { SealedRowSet } from "./sealed-row-set.js";

/**
 * The rewrap of private keys, spread over a group of workers. A rotation (or an explicit
 * RewrapPrivateKeys) walks every sealed row set for rows off the primary master key and
 * enqueues them in chunks, each entry naming a set and a key range. Any number of workers
 * (every `keymesh serve keys` process, and `keymesh worker rewrap`) consume the queue as one
 * Redis Streams consumer group (the in-process queue in the embedded default): each chunk is
 * opened and sealed again under the primary, written with a compare-and-set on the old
 * ciphertext, and acknowledged only after that write. A worker that dies holding a chunk
 * leaves it pending; after `idleClaimMs` another worker claims it (XAUTOCLAIM) and redoes it.
 * Redoing is harmless: rows already on the primary are no longer "off the primary" and are
 * skipped, and the compare-and-set lets only one writer win per row.
 *
 * The sets and the compare-and-set are the master-key rotation's `SealedRowSet`s; this file
 * only adds the distribution of the work over a queue. A service that cannot walk the sets
 * itself (the vault, after a rotation through its own RPC) enqueues one `scan` entry: the
 * worker that takes it enqueues the chunks.
 *
 * One scan does not finish a rotation: a key service that has not yet re-read the primary
 * (every process does within ROTATION_SETTLE_MS) still seals new private keys under the old
 * version, and a key sealed just before the rotation can be stored behind the scan. So every
 * rotation also enqueues a `scan` entry due once that time has passed (`notBefore`): the
 * worker that takes it waits until then, and queues whatever is still off the primary.
 */

/** The queue and consumer group of private-key rewrap chunks. */
export const KEY_REWRAP_QUEUE = "keymesh.rewrap.keys";
export const KEY_REWRAP_GROUP = "rewrap";

/** Rows per queue entry: small enough to redo cheaply after a crash, large enough to batch the writes. */
export const DEFAULT_CHUNK_ROWS = 50;

/** What one chunk did. */
export interface ChunkResult {
  rewrapped: number;
  /** Rows another writer changed first (nothing to do). */
  raced: number;
  /** Rows that could not be opened (tampered, or their key is not loaded); left as they are and logged. */
  failed: number;
}

/** Enqueues every row off `primary` of every set, in chunks; returns the rows and entries enqueued. */
export async function enqueueRewrapChunks(opts: {
  readonly sets: readonly SealedRowSet[];
  readonly queue: JobQueue;
  readonly primary: number;
  readonly chunkRows?: number;
}): Promise<{ rows: number; chunks: number }> {
  const chunkRows = opts.chunkRows ?? DEFAULT_CHUNK_ROWS;
  let rows = 0;
  let chunks = 0;
  for (const set of opts.sets) {
    let after = "";
    for (;;) {
      const batch = await set.scan(opts.primary, after, chunkRows);
      if (batch.length === 0) break;
      const through = batch[batch.length - 1]!.key;
      await opts.queue.enqueue({ set: set.name, after, through, primary: String(opts.primary) });
      rows += batch.length;
      chunks++;
      after = through;
    }
  }
  return { rows, chunks };
}

/**
 * Enqueues the scan that finishes a rotation: due `settleMs` from now, when every process has
 * re-read the primary, it queues the rows still off it (see the file's comment).
 */
export async function enqueueSettledScan(queue: JobQueue, reason: string, settleMs = ROTATION_SETTLE_MS): Promise<void> {
  await queue.enqueue({ scan: `${reason}-settled`, notBefore: String(Date.now() + settleMs) });
}

/** Rewraps the rows of `set` with keys in (after, through] that are off the current primary. */
export async function rewrapChunk(
  set: SealedRowSet,
  range: { after: string; through: string },
  ring: MasterKeyring,
  logger?: Logger,
): Promise<ChunkResult> {
  const result: ChunkResult = { rewrapped: 0, raced: 0, failed: 0 };
  let after = range.after;
  for (;;) {
    const rows = (await set.scan(ring.primaryVersion, after, DEFAULT_CHUNK_ROWS)).filter((r) => r.key <= range.through);
    if (rows.length === 0) return result;
    const items = resealed(ring, rows, (row, err) => {
      result.failed++;
      logger?.error({ set: set.name, row: row.key, err: String(err) }, "a private key could not be rewrapped; it stays on its version");
    });
    await failpoint("rewrap.chunk.before-write");
    for (const ok of items.length === 0 ? [] : await set.replace(items)) {
      if (ok) result.rewrapped++;
      else result.raced++;
    }
    after = rows[rows.length - 1]!.key;
    if (after >= range.through) return result;
  }
}

/** Options for `runKeyRewrapWorker`. */
export interface KeyRewrapWorkerOptions {
  readonly queue: JobQueue;
  readonly sets: () => readonly SealedRowSet[];
  /** The keyring, read per chunk so a rotation during the rewrap is picked up. */
  readonly ring: () => MasterKeyring;
  /** Re-reads the mesh's primary before each chunk (no-op when the configuration decides it). */
  readonly refresh?: () => Promise<void>;
  /** This worker's consumer name (unique per process). */
  readonly consumer: string;
  /** Pending entries idle this long with a (presumably dead) worker are taken over. */
  readonly idleClaimMs: number;
  readonly signal: AbortSignal;
  readonly logger?: Logger;
  /** Told after each acknowledged chunk (tests, progress logs). */
  readonly onChunk?: (result: ChunkResult & { set: string; redelivered: boolean }) => void;
  /** How long after a rotation every process has re-read the primary (default ROTATION_SETTLE_MS). */
  readonly settleMs?: number;
}

/** Consumes rewrap chunks until `signal` aborts. */
export async function runKeyRewrapWorker(opts: KeyRewrapWorkerOptions): Promise<void> {
  const { logger } = opts;
  await opts.queue.consume(
    KEY_REWRAP_GROUP,
    opts.consumer,
    async (entry) => {
      if (entry.payload.scan !== undefined) {
        const due = Number(entry.payload.notBefore ?? 0) - Date.now();
        // Aborted while waiting: thrown, so the entry stays pending for another worker.
        if (due > 0) await sleep(due, undefined, { signal: opts.signal });
        await opts.refresh?.();
        const r = await enqueueRewrapChunks({ sets: opts.sets(), queue: opts.queue, primary: opts.ring().primaryVersion });
        // A rotation made elsewhere (the vault's RPC) is finished like one made here.
        if (entry.payload.notBefore === undefined) await enqueueSettledScan(opts.queue, entry.payload.scan, opts.settleMs);
        logger?.info({ entry: entry.id, reason: entry.payload.scan, ...r }, "private keys off the primary master key queued for rewrap");
        return;
      }
      await opts.refresh?.();
      const { set: name = "", after = "", through = "" } = entry.payload;
      const set = opts.sets().find((s) => s.name === name);
      if (set === undefined || through === "") {
        // Not ours to do (a set this build does not know): acknowledge rather than retry forever.
        logger?.warn({ entry: entry.id, set: name }, "rewrap entry for an unknown set skipped");
        return;
      }
      const r = await rewrapChunk(set, { after, through }, opts.ring(), logger);
      await failpoint("rewrap.chunk.before-ack");
      logger?.debug({ entry: entry.id, set: name, ...r, redelivered: entry.redelivered }, "rewrap chunk done");
      opts.onChunk?.({ ...r, set: name, redelivered: entry.redelivered });
    },
    {
      signal: opts.signal,
      idleClaimMs: opts.idleClaimMs,
      count: 1,
      onError: (err, entry) => logger?.warn({ err: String(err), entry: entry?.id }, "rewrap chunk failed; it will be retried"),
    },
  );
}
