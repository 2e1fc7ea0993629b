import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Logger } from "pino";
import type { Coordinator } from "../shared/coordination/types.js";
import { KEY_REWRAP_QUEUE, runKeyRewrapWorker, type ChunkResult } from "../shared/crypto/rotation/rewrap-chunks.js";
import type { SealedRowSet } from "../shared/crypto/rotation/sealed-row-set.js";
import type { Database } from "../shared/storage/database.js";
import type { MasterKeyManager } from "../shared/crypto/rotation/master-key-manager.js";
import { createKeyringKeysSet, createUserKeysSet } from "./sealed-sets.js";

/** The private-key sets of the keys service, in the order they are rewrapped. */
export function keysSealedSets(db: Database): SealedRowSet[] {
  return [createKeyringKeysSet(db), createUserKeysSet(db)];
}

/** Runs one rewrap worker of the consumer group until `signal` aborts. */
export function startKeyRewrapWorker(opts: {
  readonly db: Database;
  readonly coordinator: Coordinator;
  readonly masterKeys: MasterKeyManager;
  readonly idleClaimMs: number;
  readonly signal: AbortSignal;
  readonly logger: Logger;
  readonly onChunk?: (r: ChunkResult & { set: string; redelivered: boolean }) => void;
}): Promise<void> {
  const sets = keysSealedSets(opts.db);
  return runKeyRewrapWorker({
    queue: opts.coordinator.queues.queue(KEY_REWRAP_QUEUE),
    sets: () => sets,
    ring: opts.masterKeys.ring,
    refresh: opts.masterKeys.refresh,
    consumer: `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`,
    idleClaimMs: opts.idleClaimMs,
    signal: opts.signal,
    logger: opts.logger,
    ...(opts.onChunk === undefined ? {} : { onChunk: opts.onChunk }),
  });
}
