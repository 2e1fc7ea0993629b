import { randomBytes } from "node:crypto";
import type { Knex } from "knex";
import type { Database } from "../shared/storage/database.js";
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
  readonly fence: number;
  readonly jobId: string;
  readonly executor: string;
  readonly startedAt: number;
  readonly signatures: readonly { recordId: number; signature: Buffer }[];
}

/** What a commit stored and refused. */
export interface CommitResult {
  readonly stored: number;
  readonly rejections: { recordId: number; reason: RejectReason }[];
}

/**
 * Checks a batch's signatures against the key's public key before anything is stored.
 * Returns false to refuse the whole batch.
 */
export type SignatureCheck = (publicKey: Buffer, payloads: Map<number, Buffer>, signatures: CommitInput["signatures"]) => boolean;

/** Persistence of records, signatures and batch history. */
export interface CollectionStore {
  seed(count: number, payloadSize: number): Promise<number>;
  claim(input: { claimId: string; claimant: string; jobId: string; size: number; now: number; expiresAt: number }): Promise<RecordRow[]>;
  /**
   * Stores a batch's signatures exactly once, if `lease` (the key service's answer for the
   * batch's key and fence; undefined: not current) is still live when the transaction starts
   * and no newer fence of the key has committed.
   */
  commit(input: CommitInput, now: () => number, lease: LeaseView | undefined, check: SignatureCheck): Promise<CommitResult>;
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

  /** One history row per lease (key, fence): a repeated or stale attempt adds nothing. */
  async function history(
    k: Knex | Knex.Transaction,
    input: CommitInput,
    size: number,
    outcome: string,
    stored: number,
    rejected: number,
    at: number,
  ): Promise<void> {
    await k("batches")
      .insert({
        id: input.batchId,
        job_id: input.jobId,
        key_id: input.keyId,
        fence: input.fence,
        size,
        claimed: size,
        start_at: input.startedAt,
        committed_at: at,
        ended_at: at,
        outcome,
        stored,
        rejected,
        executor: input.executor,
      })
      .onConflict()
      .ignore();
  }

  /** Stores the signatures of records still unsigned and in the claim; says why the others were refused. */
  async function storeSignatures(trx: Knex.Transaction, input: CommitInput, ids: number[], at: number): Promise<CommitResult> {
    // One conditional write flips every record that is still unsigned and in this claim;
    // when it flips them all (the normal case) no per-record read is needed.
    const flipped = await trx("records").whereIn("id", ids).where({ claim_id: input.claimId, signed: 0 }).update({ signed: 1 });
    let accepted: CommitInput["signatures"][number][] = [...input.signatures];
    const rejections: CommitResult["rejections"] = [];
    if (flipped !== ids.length) {
      const rows = (await trx("records as r")
        .leftJoin("signatures as s", "s.record_id", "r.id")
        .select("r.id", "r.claim_id", "s.record_id as signed_by")
        .whereIn("r.id", ids)) as { id: number | string; claim_id: string | null; signed_by: number | string | null }[];
      const byId = new Map(rows.map((r) => [Number(r.id), r]));
      accepted = [];
      for (const sig of input.signatures) {
        const row = byId.get(sig.recordId);
        if (row && row.signed_by != null) rejections.push({ recordId: sig.recordId, reason: "already_signed" });
        else if (!row || row.claim_id !== input.claimId) rejections.push({ recordId: sig.recordId, reason: "not_in_claim" });
        else accepted.push(sig);
      }
    }
    if (accepted.length > 0) {
      await insertRows(
        trx,
        "signatures",
        accepted.map((s) => ({
          record_id: s.recordId,
          key_id: input.keyId,
          fence: input.fence,
          batch_id: input.batchId,
          signature: s.signature,
          signed_at: at,
        })),
      );
    }
    return { stored: accepted.length, rejections };
  }

  return {
    async seed(count, payloadSize) {
      const now = Date.now();
      for (let done = 0; done < count; done += insertChunk) {
        const n = Math.min(insertChunk, count - done);
        const rows = Array.from({ length: n }, () => ({ payload: randomBytes(payloadSize), created_at: now, signed: 0, claim_expires_at: 0 }));
        await primary("records").insert(rows);
      }
      return count;
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
        return rows.map((r) => ({ id: Number(r.id), payload: Buffer.from(r.payload) }));
      });
    },

    async commit(input, now, lease, check) {
      const ids = input.signatures.map((s) => s.recordId);
      // Spot-check one signature against the key's public key before anything is written;
      // payloads never change, so this read needs no transaction.
      const probe = input.signatures[Math.floor(Math.random() * input.signatures.length)]!;
      const [probeRow] = (await primary("records").select("payload").where("id", probe.recordId)) as { payload: Buffer }[];
      // The key's row in our fence table exists before the transaction locks it, so concurrent
      // first commits of a key never race to create it inside their transactions.
      await primary("collection_key_fences").insert({ key_id: input.keyId, fence: 0, updated_at: now() }).onConflict("key_id").ignore();

      const refuseAll = async (k: Knex | Knex.Transaction, reason: RejectReason, at: number) => {
        await history(k, input, ids.length, "rejected", 0, ids.length, at);
        return { stored: 0, rejections: ids.map((recordId) => ({ recordId, reason })) };
      };

      return readCommitted(async (trx) => {
        const at = now();
        // The key service said, just now, that this fence is the key's current lease. A lease
        // runs without a gap from its grant until it lapses (renewals only extend a live one),
        // so if it is still live at this moment, after the batch was signed, the signing
        // happened under it, and nobody can hold the key before it lapses: `at`, recorded as
        // committed_at, precedes any later lease of the key.
        if (lease === undefined || at >= lease.validUntil) return refuseAll(trx, "stale_fence", at);
        if (probeRow && !check(lease.publicKey, new Map([[probe.recordId, Buffer.from(probeRow.payload)]]), [probe])) {
          return refuseAll(trx, "invalid_signature", at);
        }
        // Raise the highest fence accepted for this key, unless a newer lease already
        // committed. The row stays locked until we commit, so commits of one key are
        // serialised in fence order and a stale holder can never land after a newer one.
        const raised = await trx("collection_key_fences")
          .where({ key_id: input.keyId })
          .andWhere("fence", "<=", input.fence)
          .update({ fence: input.fence, updated_at: at });
        if (raised !== 1) return refuseAll(trx, "stale_fence", at);

        const result = await storeSignatures(trx, input, ids, at);
        await history(trx, input, ids.length, result.stored > 0 ? "committed" : "rejected", result.stored, result.rejections.length, at);
        return result;
      });
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
        return Number(await trx("records").del());
      });
    },
  };
}
