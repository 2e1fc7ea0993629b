import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { JobQueue } from "../../coordination/types.js";
import { failpoint } from "../../failpoints.js";
import { open, seal, type MasterKeyring } from "../envelope.js";
import { ROTATION_SETTLE_MS } from "./master-key-manager.js";
import type { Replacement, SealedRowSet } from "./sealed-row-set.js";

/**
 * The rewrap: moves every sealed row of every registered set to the primary master-key
 * version. Each row is opened, sealed afresh under the primary and written back with a
 * compare-and-set on the old ciphertext, so a concurrent writer (a new version, a destroy)
 * always wins and nothing is lost. There is no progress to save: the next pass scans for
 * rows still off the primary, so a pass killed half-way resumes where it stopped. Readers
 * never notice: until the write lands they read the old ciphertext, which the old key, still
 * loaded, opens.
 */

/**
 * Each row opened and sealed afresh under the primary version, ready for `set.replace`; a row
 * that does not open is reported to `failed` and left out (it stays on its version).
 */
export function resealed(ring: MasterKeyring, rows: readonly Replacement["row"][], failed: (row: Replacement["row"], err: unknown) => void): Replacement[] {
  const items: Replacement[] = [];
  for (const row of rows) {
    try {
      items.push({ row, next: seal(ring, open(ring, row.sealed, row.context), row.context), nextVersion: ring.primaryVersion });
    } catch (err) {
      failed(row, err);
    }
  }
  return items;
}

/** Outcome of one pass. */
export interface RewrapResult {
  /** Rows moved to the primary. */
  rewrapped: number;
  /** Rows that changed under us (a concurrent writer won the compare-and-set). */
  raced: number;
  /** Rows that could not be opened (tampered, or their key is not loaded); left as they are. */
  failed: number;
  /** Rows still off the primary after the pass, over every set. */
  remaining: number;
}

/** Options for `rewrapSets`. */
export interface RewrapOptions {
  /** The keyring; called per batch so a rotation during the pass is picked up. */
  readonly ring: () => MasterKeyring;
  /** Maximum rows to move; 0 or unset: all. */
  readonly limit?: number;
  /** Rows per scan (default 200). */
  readonly batchSize?: number;
  readonly signal?: AbortSignal;
  readonly logger?: Logger;
}

/** Rows of `sets` on versions other than `primary`. */
export async function rowsOffPrimary(sets: readonly SealedRowSet[], primary: number): Promise<number> {
  let n = 0;
  for (const set of sets) for (const [v, count] of await set.countByVersion(true)) if (v !== primary) n += count;
  return n;
}

/** Rows of `sets` sealed under `version`. */
export async function rowsUnder(sets: readonly SealedRowSet[], version: number): Promise<number> {
  let n = 0;
  for (const set of sets) n += (await set.countByVersion(true)).get(version) ?? 0;
  return n;
}

/** One rewrap pass over `sets`. */
export async function rewrapSets(sets: readonly SealedRowSet[], opts: RewrapOptions): Promise<RewrapResult> {
  const result: RewrapResult = { rewrapped: 0, raced: 0, failed: 0, remaining: 0 };
  const limit = opts.limit !== undefined && opts.limit > 0 ? opts.limit : Infinity;
  const batchSize = opts.batchSize ?? 200;
  for (const set of sets) {
    let after = "";
    while (result.rewrapped < limit && opts.signal?.aborted !== true) {
      const ring = opts.ring();
      const rows = await set.scan(ring.primaryVersion, after, Math.min(batchSize, limit - result.rewrapped));
      if (rows.length === 0) break;
      const items = resealed(ring, rows, (row, err) => {
        result.failed++;
        opts.logger?.error({ set: set.name, row: row.key, err: String(err) }, "a sealed row could not be rewrapped");
      });
      for (const replaced of items.length === 0 ? [] : await set.replace(items)) {
        if (replaced) result.rewrapped++;
        else result.raced++;
      }
      after = rows[rows.length - 1]!.key;
      await failpoint("rewrap.after-batch");
    }
  }
  result.remaining = await rowsOffPrimary(sets, opts.ring().primaryVersion);
  return result;
}

/** Options for `runRewrapWorker`. */
export interface RewrapWorkerOptions {
  readonly queue: JobQueue;
  readonly sets: () => readonly SealedRowSet[];
  readonly ring: () => MasterKeyring;
  /** Re-reads the mesh's primary before each pass. */
  readonly refresh: () => Promise<void>;
  /** This process's consumer name. */
  readonly consumer: string;
  readonly signal: AbortSignal;
  readonly logger?: Logger;
  /** How long after a pass starts every process has re-read the primary (default ROTATION_SETTLE_MS). */
  readonly settleMs?: number;
}

/** The queue rotations enqueue rewrap work on, and its consumer group. */
export const REWRAP_QUEUE = "keymesh.rewrap";
export const REWRAP_GROUP = "rewrap";
/** Passes one queue entry runs at most (see runRewrapWorker). */
const MAX_PASSES = 10;
/** The pause between two passes: writers in flight at the rotation land meanwhile. */
const PASS_PAUSE_MS = 200;

/**
 * Runs the background rewrap until `signal` aborts: each queue entry (one per rotation)
 * triggers a full pass. If rows are still off the primary when the worker starts (a pass was
 * killed), it enqueues a pass itself, so the rewrap resumes after a crash even with the
 * in-process queue. Entries are acknowledged only after their pass, so a pass whose process
 * died is redelivered to another worker.
 */
export async function runRewrapWorker(opts: RewrapWorkerOptions): Promise<void> {
  const { queue, logger } = opts;
  const settleMs = opts.settleMs ?? ROTATION_SETTLE_MS;
  try {
    await opts.refresh();
    const remaining = await rowsOffPrimary(opts.sets(), opts.ring().primaryVersion);
    if (remaining > 0) {
      logger?.info({ remaining, primary: opts.ring().primaryVersion }, "rows off the primary master key: resuming the rewrap");
      await queue.enqueue({ reason: "resume", primary: String(opts.ring().primaryVersion) });
    }
  } catch (err) {
    logger?.warn({ err: String(err) }, "could not check for an unfinished rewrap at start");
  }
  await queue.consume(
    REWRAP_GROUP,
    opts.consumer,
    async (entry) => {
      // Rows can still arrive under the old primary after a pass: a writer that sealed just
      // before the rotation stores its row after the pass scanned past it, a writer that wins
      // the compare-and-set leaves its row to a later pass, and a process that has not yet
      // re-read the primary keeps sealing under the old one. So passes go on while rows the
      // last one could move are left, and once more after every process has re-read it.
      const settled = Date.now() + settleMs;
      // Whether this pass began after the wait for `settled` (a timer may fire a millisecond
      // before the wall clock reaches it: the pass after that wait is the settled one).
      let afterSettle = false;
      for (let pass = 1; pass <= MAX_PASSES && !opts.signal.aborted; pass++) {
        await opts.refresh();
        const started = Date.now();
        const r = await rewrapSets(opts.sets(), { ring: opts.ring, signal: opts.signal, ...(logger === undefined ? {} : { logger }) });
        logger?.info({ ...r, primary: opts.ring().primaryVersion, entry: entry.id, pass, durationMs: Date.now() - started }, "rewrap pass done");
        const movableLeft = r.remaining > r.failed;
        if (!movableLeft && (afterSettle || started >= settled)) return;
        afterSettle = !movableLeft;
        await sleep(movableLeft ? PASS_PAUSE_MS : Math.max(0, settled - Date.now()), undefined, { signal: opts.signal }).catch(() => undefined);
      }
    },
    {
      signal: opts.signal,
      // A pass over many rows can take minutes; redelivering it earlier only duplicates work.
      idleClaimMs: 120_000,
      onError: (err) => logger?.warn({ err: String(err) }, "rewrap pass failed; it will be retried"),
    },
  );
}
