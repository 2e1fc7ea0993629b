import { randomBytes, type KeyObject } from "node:crypto";
import { setImmediate } from "node:timers/promises";
import type { Knex } from "knex";
import type { Database } from "../shared/storage/database.js";
import { abortError, InvalidInputError } from "../shared/errors.js";
import type { LeaseView } from "./lease-check.js";

/** A record to sign. */
export interface RecordRow {
  readonly id: number;
  readonly payload: Buffer;
}

/** A stored signature and its provenance. */
export interface SignatureRow {
  readonly recordId: number;
  readonly signature: Buffer;
  readonly keyId: string;
  readonly fence: number;
  readonly batchId: string;
  readonly signedAt: number;
}

/** Why one signature of a commit was refused. */
export type RejectReason = "already_signed" | "stale_fence" | "not_in_claim" | "invalid_signature";

/** One batch's commit. */
export interface CommitInput {
  readonly claimId: string;
  readonly batchId: string;
  readonly keyId: string;
  /** The fence of the lease, from a verified lease token. */
  readonly fence: bigint;
  readonly signatures: readonly { recordId: number; signature: Uint8Array }[];
}

/** What a commit stored and refused. */
export interface CommitResult {
  readonly stored: number;
  readonly rejections: { recordId: number; reason: RejectReason }[];
  /** When the batch's claim was made, if its claim is known (server clock, Unix ms). */
  readonly startedAt?: number;
  /** When the commit was decided (committed_at of its history row). */
  readonly decidedAt?: number;
}

/**
 * Checks a batch's signatures against the key's public key before anything is stored.
 * Returns false to refuse the whole batch.
 */
export type SignatureCheck = (publicKey: KeyObject, payloads: Map<number, Buffer>, signatures: CommitInput["signatures"]) => boolean;

/** Persistence of records, signatures and batch history. */
export interface CollectionStore {
  /**
   * Adds records in one transaction, yielding to the event loop between chunks so health
   * checks and other calls keep being served; `signal` aborting (deadline, cancel) rolls
   * everything back.
   */
  seed(count: number, payloadSize: number, signal?: AbortSignal): Promise<number>;
  claim(input: { claimId: string; claimant: string; jobId: string; size: number; now: number; expiresAt: number }): Promise<RecordRow[]>;
  /**
   * Stores a batch's signatures exactly once, if `lease` (from the batch's verified lease
   * token) is still live when the transaction starts and no newer or equal fence of the key
   * has committed. Records outside the claim are refused first; a sample of the rest is
   * verified. A refused commit stores nothing but its history row (outcome "rejected"); a
   * commit writes one history row.
   */
  commit(input: CommitInput, now: () => number, lease: LeaseView, check: SignatureCheck): Promise<CommitResult>;
  releaseClaim(claimId: string): Promise<number>;
  get(id: number): Promise<{ record: RecordRow; signature?: SignatureRow } | undefined>;
  progress(now: number): Promise<{ total: number; signed: number; claimed: number }>;
  export(afterId: number, limit: number): Promise<{ record: RecordRow; signature?: SignatureRow }[]>;
  deleteAll(): Promise<number>;
  batchStats(jobId: string): Promise<BatchStats>;
}

/** A summary of batch history. */
export interface BatchStats {
  committed: number;
  rejected: number;
  batchesPerKey: number[];
  latenciesMs: number[];
  duplicates: number;
  sizes: number[];
}

const SEED_CHUNK = 2000;

/** Signatures verified per commit: a batch with any bad signature among n is caught with probability ≥ min(1, SAMPLE/n). */
export const COMMIT_SAMPLE = 16;

/** Picks up to `n` distinct random elements. */
function sample<T>(items: readonly T[], n: number): T[] {
  if (items.length <= n) return [...items];
  const copy = [...items];
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(Math.random() * (copy.length - i));
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy.slice(0, n);
}

/** A fence as SQL sees it; every fence here came from a verified token, so it fits a double exactly. */
const fenceValue = (fence: bigint): number => {
  if (fence > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`fence ${fence} exceeds what this store records exactly`);
  return Number(fence);
};

/** SQLite compiles a multi-row insert into a compound SELECT, limited to 500 terms. */
const SQLITE_INSERT_CHUNK = 400;

/** The knex implementation; claims use FOR UPDATE SKIP LOCKED on MySQL/MariaDB. */
export function createCollectionStore(db: Database): CollectionStore {
  const primary = db.primary;
  const mysql = db.dialect === "mysql";
  const insertChunk = mysql ? SEED_CHUNK : SQLITE_INSERT_CHUNK;

  /** A multi-row insert, split where the dialect needs it. */
  async function insertRows(k: Knex | Knex.Transaction, table: string, rows: Record<string, unknown>[]): Promise<void> {
    for (let i = 0; i < rows.length; i += insertChunk) await k(table).insert(rows.slice(i, i + insertChunk));
  }

  async function readCommitted<T>(fn: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
    return primary.transaction(fn, mysql ? { isolationLevel: "read committed" } : undefined);
  }

  const toSignature = (r: Record<string, unknown>): SignatureRow | undefined =>
    r.signature == null
      ? undefined
      : {
          recordId: Number(r.id),
          signature: Buffer.from(r.signature as Buffer),
          keyId: String(r.key_id),
          fence: Number(r.fence),
          batchId: String(r.batch_id),
          signedAt: Number(r.signed_at),
        };

  /** The claim's own record: who claimed, for which job, how many, when (server clock). */
  async function claimOf(k: Knex | Knex.Transaction, claimId: string) {
    return (await k("claims").select("job_id", "claimant", "size", "claimed", "claimed_at").where("id", claimId).first()) as
      | { job_id: string; claimant: string; size: number; claimed: number; claimed_at: number | string }
      | undefined;
  }

  /** The batch's one history row, from the claim's record and the server's clock. */
  function historyRow(input: CommitInput, claim: Awaited<ReturnType<typeof claimOf>>, outcome: string, stored: number, rejected: number, at: number) {
    return {
      id: input.batchId,
      job_id: claim?.job_id ?? "",
      key_id: input.keyId,
      fence: fenceValue(input.fence),
      size: claim?.size ?? stored + rejected,
      claimed: claim?.claimed ?? stored + rejected,
      start_at: claim ? Number(claim.claimed_at) : at,
      committed_at: at, // when the commit was decided, whatever its outcome
      ended_at: at,
      outcome,
      stored,
      rejected,
      executor: claim?.claimant ?? "",
    };
  }

  /** Stores a batch's signatures and its one history row. */
  async function storeBatch(trx: Knex.Transaction, input: CommitInput, accepted: CommitInput["signatures"], rejected: number, at: number): Promise<number | undefined> {
    const flipped = await trx("records")
      .whereIn("id", accepted.map((s) => s.recordId))
      .where({ claim_id: input.claimId, signed: 0 })
      .update({ signed: 1 });
    // The rows were read under lock in this transaction; anything else is a broken store.
    if (flipped !== accepted.length) throw new Error(`commit of ${input.batchId}: ${flipped} of ${accepted.length} records flipped`);
    await insertRows(
      trx,
      "signatures",
      accepted.map((s) => ({
        record_id: s.recordId,
        key_id: input.keyId,
        fence: fenceValue(input.fence),
        batch_id: input.batchId,
        signature: s.signature,
        signed_at: at,
      })),
    );
    const claim = await claimOf(trx, input.claimId);
    await trx("batches").insert(historyRow(input, claim, "committed", accepted.length, rejected, at));
    return claim ? Number(claim.claimed_at) : undefined;
  }

  /**
   * Records a refused batch of a proven lease (its token verified), after its transaction
   * rolled back: one row under the batch's own id, none if the id is already recorded (a
   * repeated commit of a stored batch).
   */
  async function recordRefusal(input: CommitInput, rejected: number, at: number): Promise<number | undefined> {
    const claim = await claimOf(primary, input.claimId);
    if (!claim) return undefined;
    await primary("batches").insert(historyRow(input, claim, "rejected", 0, rejected, at)).onConflict("id").ignore();
    return Number(claim.claimed_at);
  }

  return {
    async seed(count, payloadSize, signal) {
      const now = Date.now();
      return primary.transaction(async (trx) => {
        for (let done = 0; done < count; done += insertChunk) {
          // SQLite runs each insert synchronously on this thread: give the loop a turn.
          await setImmediate();
          if (signal?.aborted) throw abortError(signal);
          const n = Math.min(insertChunk, count - done);
          const rows = Array.from({ length: n }, () => ({ payload: randomBytes(payloadSize), created_at: now, signed: 0, claim_expires_at: 0 }));
          await trx("records").insert(rows);
        }
        return count;
      });
    },

    async claim({ claimId, claimant, jobId, size, now, expiresAt }) {
      return readCommitted(async (trx) => {
        let query = trx("records")
          .select("id", "payload")
          .where("signed", 0)
          .andWhere("claim_expires_at", "<", now)
          .orderBy([{ column: "claim_expires_at" }, { column: "id" }])
          .limit(size);
        if (mysql) query = query.forUpdate().skipLocked();
        const rows = (await query) as { id: number | string; payload: Buffer }[];
        if (rows.length === 0) return [];
        const ids = rows.map((r) => Number(r.id));
        await trx("records")
          .whereIn("id", ids)
          .update({ claim_id: claimId, claimed_by: claimant, claim_expires_at: expiresAt, job_id: jobId });
        await trx("claims").insert({ id: claimId, job_id: jobId, claimant, size, claimed: rows.length, claimed_at: now, expires_at: expiresAt });
        return rows.map((r) => ({ id: Number(r.id), payload: Buffer.from(r.payload) }));
      });
    },

    async commit(input, now, lease, check) {
      const ids = input.signatures.map((s) => s.recordId);
      // The key's row in our fence table exists before the transaction locks it, so concurrent
      // first commits of a key never race to create it inside their transactions.
      await primary("collection_key_fences").insert({ key_id: input.keyId, fence: 0, updated_at: now() }).onConflict("key_id").ignore();
      const refuseAll = (reason: RejectReason): CommitResult => ({ stored: 0, rejections: ids.map((recordId) => ({ recordId, reason })) });

      const result = await readCommitted(async (trx) => {
        const at = now();
        // The token says the lease runs until validUntil; leases run without a gap from grant
        // to lapse and a new grant needs the old lease gone, so if it is live at this moment,
        // after the batch was signed, the signing happened under it and any later lease of
        // the key starts after `at`, recorded as committed_at.
        if (at >= lease.validUntil) return refuseAll("stale_fence");

        // Records outside the claim are refused before anything else, so invented or foreign
        // record ids can neither dodge the signature sample nor be written.
        let query = trx("records").select("id", "payload", "claim_id", "signed").whereIn("id", ids);
        if (mysql) query = query.forUpdate();
        const rows = (await query) as { id: number | string; payload: Buffer; claim_id: string | null; signed: number | boolean }[];
        const byId = new Map(rows.map((r) => [Number(r.id), r]));
        const accepted: CommitInput["signatures"][number][] = [];
        const rejections: CommitResult["rejections"] = [];
        for (const sig of input.signatures) {
          const row = byId.get(sig.recordId);
          if (row && Number(row.signed) === 1) rejections.push({ recordId: sig.recordId, reason: "already_signed" });
          else if (!row || row.claim_id !== input.claimId) rejections.push({ recordId: sig.recordId, reason: "not_in_claim" });
          else accepted.push(sig);
        }
        if (accepted.length === 0) return { stored: 0, rejections };

        // A sample, not one: a batch signed by another key, or with forged signatures mixed in,
        // is refused whole.
        const probes = sample(accepted, COMMIT_SAMPLE);
        const payloads = new Map(probes.map((p) => [p.recordId, Buffer.from(byId.get(p.recordId)!.payload)]));
        if (!check(lease.publicKey, payloads, probes)) return refuseAll("invalid_signature");

        // Raise the highest fence accepted for this key, unless this or a newer lease already
        // committed (one batch per lease). The row stays locked until we commit, so commits of
        // one key are serialised in fence order and a stale holder can never land after a
        // newer one.
        const taken = (await trx("batches").select("outcome").where("id", input.batchId).first()) as { outcome: string } | undefined;
        if (taken?.outcome === "committed") throw new InvalidInputError(`batch_id ${input.batchId} was already committed; every batch needs its own id`);
        // An earlier refused attempt of this batch is superseded by the commit's own row.
        if (taken) await trx("batches").where("id", input.batchId).del();
        const raised = await trx("collection_key_fences")
          .where({ key_id: input.keyId })
          .andWhere("fence", "<", fenceValue(input.fence))
          .update({ fence: fenceValue(input.fence), updated_at: at });
        if (raised !== 1) return refuseAll("stale_fence");

        const startedAt = await storeBatch(trx, input, accepted, rejections.length, at);
        return { stored: accepted.length, rejections, startedAt, decidedAt: at };
      });
      if (result.stored === 0) {
        const decidedAt = now();
        return { ...result, startedAt: await recordRefusal(input, result.rejections.length, decidedAt), decidedAt };
      }
      return result;
    },

    async releaseClaim(claimId) {
      return primary("records").where({ claim_id: claimId, signed: 0 }).update({ claim_id: null, claim_expires_at: 0 });
    },

    async get(id) {
      const row = await db.replica("records as r")
        .leftJoin("signatures as s", "s.record_id", "r.id")
        .select("r.id", "r.payload", "s.signature", "s.key_id", "s.fence", "s.batch_id", "s.signed_at")
        .where("r.id", id)
        .first();
      if (!row) return undefined;
      return { record: { id: Number(row.id), payload: Buffer.from(row.payload) }, signature: toSignature(row) };
    },

    async progress(now) {
      const [total] = await db.replica("records").count({ n: "*" });
      const [signed] = await db.replica("signatures").count({ n: "*" });
      const [claimed] = await db.replica("records").where("signed", 0).andWhere("claim_expires_at", ">=", now).count({ n: "*" });
      const n = (r: unknown) => Number((r as { n: number | string }).n);
      return { total: n(total), signed: n(signed), claimed: n(claimed) };
    },

    async export(afterId, limit) {
      const rows = await db.replica("records as r")
        .leftJoin("signatures as s", "s.record_id", "r.id")
        .select("r.id", "r.payload", "s.signature", "s.key_id", "s.fence", "s.batch_id", "s.signed_at")
        .where("r.id", ">", afterId)
        .orderBy("r.id")
        .limit(limit);
      return rows.map((row) => ({ record: { id: Number(row.id), payload: Buffer.from(row.payload) }, signature: toSignature(row) }));
    },

    async batchStats(jobId) {
      const scope = <T extends Knex.QueryBuilder>(q: T) => (jobId ? q.where("job_id", jobId) : q);
      const rows = (await scope(db.replica("batches").select("key_id", "outcome", "size", "start_at", "committed_at"))) as {
        key_id: string;
        outcome: string;
        size: number;
        start_at: number | string;
        committed_at: number | string;
      }[];
      const perKey = new Map<string, number>();
      const latencies: number[] = [];
      const sizes = new Set<number>();
      let committed = 0;
      for (const r of rows) {
        if (r.outcome !== "committed") continue;
        committed++;
        perKey.set(r.key_id, (perKey.get(r.key_id) ?? 0) + 1);
        latencies.push(Number(r.committed_at) - Number(r.start_at));
        sizes.add(Number(r.size));
      }
      const [sig] = await db.replica("signatures").count({ n: "*" }).countDistinct({ d: "record_id" });
      const s = sig as { n: number | string; d: number | string };
      return {
        committed,
        rejected: rows.length - committed,
        batchesPerKey: [...perKey.values()],
        latenciesMs: latencies.sort((a, b) => a - b),
        duplicates: Number(s.n) - Number(s.d),
        sizes: [...sizes].sort((a, b) => a - b),
      };
    },

    async deleteAll() {
      return primary.transaction(async (trx) => {
        await trx("signatures").del();
        // collection_key_fences stays: fences only grow, whatever records come next.
        await trx("batches").del();
        await trx("claims").del();
        return Number(await trx("records").del());
      });
    },
  };
}
