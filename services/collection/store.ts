import { randomBytes, randomUUID, type KeyObject } from "node:crypto";
import { setImmediate } from "node:timers/promises";
import type { Knex } from "knex";
import type { Database } from "../shared/storage/database.js";
import { isDuplicateKey, isLockWaitTimeout, isMissingReference } from "../shared/storage/errors.js";
import { placeholders, prepared, withHeldConnection, type WriteResult } from "../shared/storage/prepared.js";
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
export type SignatureCheck = (publicKey: KeyObject, payloads: Map<number, Buffer>, signatures: CommitInput["signatures"]) => boolean | Promise<boolean>;

/** Persistence of records, signatures and batch history. */
export interface CollectionStore {
  /**
   * Adds records in one transaction, yielding to the event loop between chunks so health
   * checks and other calls keep being served; `signal` aborting (deadline, cancel) rolls
   * everything back. Seeds run one at a time, so record ids grow in commit order.
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
  /** The ids of a job's committed batches, in the order they committed. */
  committedBatches(jobId: string): Promise<string[]>;
  /** The records one batch signed, with their signatures, in id order. */
  exportBatch(batchId: string): Promise<{ record: RecordRow; signature?: SignatureRow }[]>;
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

/** A commit refused part-way through its transaction: thrown to roll back what it wrote. */
class Refusal extends Error {
  /** `closed`: the claim was no longer open; each record's reason is looked up afterwards. */
  constructor(
    readonly reason: RejectReason,
    readonly closed = false,
  ) {
    super(reason);
  }
}

/**
 * A commit's signatures inside its claim's range (accepted, when the claim is still open) and
 * outside it (refused, each with its reason, before anything is written).
 */
function splitByClaim(signatures: CommitInput["signatures"], claim: ClaimRow | undefined) {
  const open = claim?.state === "open";
  const first = Number(claim?.first_id ?? 0);
  const last = Number(claim?.last_id ?? -1);
  const accepted: CommitInput["signatures"][number][] = [];
  const outside: CommitInput["signatures"][number][] = [];
  for (const sig of signatures) (open && sig.recordId >= first && sig.recordId <= last ? accepted : outside).push(sig);
  return { accepted, outside };
}

/** A commit refused whole: every signature with the same reason, nothing stored. */
function refusedWhole(input: CommitInput, reason: RejectReason): CommitResult {
  return { stored: 0, rejections: input.signatures.map((s) => ({ recordId: s.recordId, reason })) };
}

/** Signature rows per INSERT statement: 12,000 parameters, within both dialects' limits. */
const SIGNATURE_INSERT_ROWS = 2000;

/** Fresh claims one ClaimBatch tries before giving up on contention (each loses only to another claim). */
const FRESH_CLAIM_ATTEMPTS = 32;

/** Stale claims one ClaimBatch looks through for a range that still has unsigned records. */
const RECLAIM_SCAN = 16;

interface ClaimRow {
  job_id: string;
  claimant: string;
  size: number;
  claimed: number;
  claimed_at: number | string;
  first_id: number | string;
  last_id: number | string;
  state: string;
}

/** A claim as this process made it, and the records drawn for its commit's signature sample. */
interface ClaimMemo extends ClaimRow {
  sample: Map<number, Buffer>;
}

/** Claims remembered at once; the oldest are forgotten first (their commits read the row). */
const CLAIM_MEMOS = 4096;

/**
 * Claims this process made and has not yet seen committed or released. A commit that finds
 * its claim here reads neither the claim's row nor sample payloads; one that does not (made
 * by another collection process, or before a restart) reads them, with the same checks.
 */
function createClaimMemos() {
  const memos = new Map<string, ClaimMemo>();
  return {
    remember(id: string, memo: ClaimMemo) {
      memos.set(id, memo);
      if (memos.size > CLAIM_MEMOS) memos.delete(memos.keys().next().value!);
    },
    take(id: string): ClaimMemo | undefined {
      const memo = memos.get(id);
      memos.delete(id);
      return memo;
    },
  };
}

/**
 * The knex implementation. Claims are id ranges (migration 0005): claiming and committing a
 * batch write no record rows. The hot statements (claim, commit) are prepared statements on
 * MySQL/MariaDB (storage/prepared.ts); stale claims are taken with FOR UPDATE SKIP LOCKED.
 */
export function createCollectionStore(db: Database): CollectionStore {
  const primary = db.primary;
  const dialect = db.dialect;
  const mysql = dialect === "mysql";
  const insertChunk = mysql ? SEED_CHUNK : SQLITE_INSERT_CHUNK;
  const forUpdate = mysql ? " FOR UPDATE" : "";
  const skipLocked = mysql ? " FOR UPDATE SKIP LOCKED" : "";
  const run = <T = Record<string, unknown>>(k: Knex | Knex.Transaction, sql: string, params: readonly unknown[]) => prepared<T>(k, dialect, sql, params);
  /** Keys whose collection_key_fences row is known to exist (it is never deleted). */
  const fenceRows = new Set<string>();
  /** Claims made by this process, with their signature sample, until committed or released. */
  const memos = createClaimMemos();
  /**
   * Fresh claims of this process, one at a time: they would only race each other for the same
   * records (a claim takes a few milliseconds); other processes' claims still lose or win on
   * the unique `fresh_first`.
   */
  let freshTurn: Promise<unknown> = Promise.resolve();
  const oneAtATime = <T>(fn: () => Promise<T>): Promise<T> => {
    const turn = freshTurn.then(fn, fn);
    freshTurn = turn.catch(() => undefined);
    return turn;
  };

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

  /** An exported row: the record, and its signature if it has one. */
  const toExported = (row: Record<string, unknown>) => ({ record: { id: Number(row.id), payload: Buffer.from(row.payload as Buffer) }, signature: toSignature(row) });

  /** The claim's own record: who claimed, for which job, which range, when (server clock). */
  async function claimOf(k: Knex | Knex.Transaction, claimId: string, lock = ""): Promise<ClaimRow | undefined> {
    const [row] = await run<ClaimRow>(k, `SELECT job_id, claimant, size, claimed, claimed_at, first_id, last_id, state FROM claims WHERE id = ?${lock}`, [claimId]);
    return row;
  }

  /** The batch's one history row, from the claim's record and the server's clock. */
  function historyRow(input: CommitInput, claim: ClaimRow | undefined, outcome: string, stored: number, rejected: number, at: number) {
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

  /** Unsigned records with ids in (after, upTo], ascending, at most `limit`. */
  async function unsignedRecords(trx: Knex.Transaction, after: number, upTo: number, limit: number): Promise<RecordRow[]> {
    const rows = await run<{ id: number | string; payload: Buffer }>(
      trx,
      // A join, not NOT EXISTS: MariaDB may answer NOT EXISTS by materialising the whole
      // signatures table; the join probes its primary key once per record of the range.
      "SELECT r.id, r.payload FROM records r LEFT JOIN signatures s ON s.record_id = r.id WHERE r.id > ? AND r.id <= ? AND s.record_id IS NULL ORDER BY r.id LIMIT ?",
      [after, upTo, limit],
    );
    return rows.map((r) => ({ id: Number(r.id), payload: r.payload }));
  }

  async function insertClaim(
    k: Knex | Knex.Transaction,
    c: { id: string; jobId: string; claimant: string; size: number; claimed: number; now: number; expiresAt: number; first: number; last: number; fresh?: boolean },
  ) {
    await run(k, "INSERT INTO claims (id, job_id, claimant, size, claimed, claimed_at, expires_at, first_id, last_id, fresh_first, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')", [
      c.id, c.jobId, c.claimant, c.size, c.claimed, c.now, c.expiresAt, c.first, c.last, c.fresh ? c.first : null,
    ]);
  }

  /**
   * A fresh range: the records after the highest id any claim covers — none of them signed,
   * as signatures are stored only under a claim covering them (migration 0005 covers records
   * signed before claims were ranges) — claimed with one insert whose unique `fresh_first`
   * makes two claims of the same records impossible (the loser reads again). Undefined when
   * no record is left after that id. No transaction and no lock: the read changes nothing,
   * and the insert is the claim.
   */
  async function claimFresh(c: { claimId: string; claimant: string; jobId: string; size: number; now: number; expiresAt: number }) {
    for (let attempt = 1; ; attempt++) {
      try {
        const rows = await freshRange(c);
        if (rows.length === 0) return undefined;
        return { rows: rows.map((r) => ({ id: Number(r.id), payload: r.payload })), first: Number(rows[0]!.id) };
      } catch (err) {
        // Another claim took these records a moment ago: the next ones are ours to try.
        if (!isDuplicateKey(err) || attempt >= FRESH_CLAIM_ATTEMPTS) throw err;
      }
    }
  }

  /**
   * Reads the next fresh range and inserts its claim: on MySQL/MariaDB one CALL of
   * keymesh_claim_fresh (migration collection/0007), which does the same in one round trip.
   * The records claimed, ascending; none when no record is left. A duplicate `fresh_first`
   * (another claim took the range first) throws.
   */
  async function freshRange(c: { claimId: string; claimant: string; jobId: string; size: number; now: number; expiresAt: number }) {
    type Row = { id: number | string; payload: Buffer };
    if (mysql) {
      return withHeldConnection(primary, (conn) =>
        conn.call<Row>("CALL keymesh_claim_fresh(?, ?, ?, ?, ?, ?)", [c.claimId, c.jobId, c.claimant, c.size, c.now, c.expiresAt]),
      );
    }
    const rows = await run<Row>(primary, "SELECT r.id, r.payload FROM records r WHERE r.id > (SELECT COALESCE(MAX(last_id), 0) FROM claims) ORDER BY r.id LIMIT ?", [c.size]);
    if (rows.length === 0) return rows;
    const first = Number(rows[0]!.id);
    const last = Number(rows[rows.length - 1]!.id);
    await insertClaim(primary, { id: c.claimId, jobId: c.jobId, claimant: c.claimant, size: c.size, claimed: rows.length, now: c.now, expiresAt: c.expiresAt, first, last, fresh: true });
    return rows;
  }

  /**
   * Takes over the range of a claim that expired or was released before it was stored: the
   * old claim is superseded (its holder's commit is refused), and its unsigned records, up
   * to `size`, are claimed anew; what is left of the range stays claimable at once.
   */
  async function reclaim(trx: Knex.Transaction, c: { claimId: string; claimant: string; jobId: string; size: number; now: number; expiresAt: number }): Promise<{ rows: RecordRow[]; first: number } | undefined> {
    const stale = await run<{ id: string; first_id: number | string; last_id: number | string }>(
      trx,
      `SELECT id, first_id, last_id FROM claims WHERE state = 'open' AND expires_at < ? ORDER BY expires_at LIMIT ${RECLAIM_SCAN}${skipLocked}`,
      [c.now],
    );
    for (const old of stale) {
      await run(trx, "UPDATE claims SET state = 'superseded' WHERE id = ?", [old.id]);
      const first = Number(old.first_id);
      const last = Number(old.last_id);
      const rows = await unsignedRecords(trx, first - 1, last, c.size);
      if (rows.length === 0) continue;
      const upTo = rows[rows.length - 1]!.id;
      await insertClaim(trx, { id: c.claimId, jobId: c.jobId, claimant: c.claimant, size: c.size, claimed: rows.length, now: c.now, expiresAt: c.expiresAt, first, last: upTo });
      if (upTo < last) {
        // The rest of the range, open and already expired: the next claim takes it.
        await insertClaim(trx, { id: randomUUID(), jobId: c.jobId, claimant: c.claimant, size: c.size, claimed: 0, now: c.now, expiresAt: 0, first: upTo + 1, last });
      }
      return { rows, first };
    }
    return undefined;
  }

  /** Runs a prepared statement where a commit's writes go (its transaction). */
  type Statements = (sql: string, params: readonly unknown[]) => Promise<WriteResult>;

  /**
   * Stores the signatures, a few thousand rows per prepared multi-row INSERT. The signatures'
   * primary key stores each record once, the foreign key refuses ids that are no records:
   * either failure is the batch's refusal (its transaction rolls back).
   */
  async function insertSignatures(statements: Statements, input: CommitInput, accepted: CommitInput["signatures"], at: number): Promise<void> {
    const fence = fenceValue(input.fence);
    for (let i = 0; i < accepted.length; i += SIGNATURE_INSERT_ROWS) {
      const chunk = accepted.slice(i, i + SIGNATURE_INSERT_ROWS);
      const params: unknown[] = [];
      for (const s of chunk) params.push(s.recordId, input.keyId, fence, input.batchId, s.signature, at);
      try {
        await statements(`INSERT INTO signatures (record_id, key_id, fence, batch_id, signature, signed_at) VALUES ${placeholders(chunk.length, 6)}`, params);
      } catch (err) {
        if (isDuplicateKey(err)) throw new Refusal("already_signed");
        if (isMissingReference(err)) throw new Refusal("not_in_claim");
        throw err;
      }
    }
  }

  /** Writes the batch's history row; a batch id already committed is the caller's mistake. */
  async function insertHistory(trx: Knex.Transaction, row: ReturnType<typeof historyRow>): Promise<void> {
    const columns = Object.keys(row);
    const sql = `INSERT INTO batches (${columns.join(", ")}) VALUES ${placeholders(1, columns.length)}`;
    try {
      await run(trx, sql, Object.values(row));
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
      const [taken] = await run<{ outcome: string }>(trx, "SELECT outcome FROM batches WHERE id = ?", [row.id]);
      if (taken?.outcome === "committed") throw new InvalidInputError(`batch_id ${row.id} was already committed; every batch needs its own id`);
      // An earlier refused attempt of this batch is superseded by the commit's own row.
      await run(trx, "DELETE FROM batches WHERE id = ?", [row.id]);
      await run(trx, sql, Object.values(row));
    }
  }

  /**
   * Records a refused batch of a proven lease (its token verified), after its transaction
   * rolled back: one row under the batch's own id, none if the id is already recorded (a
   * repeated commit of a stored batch).
   */
  async function recordRefusal(input: CommitInput, memo: ClaimRow | undefined, rejected: number, at: number): Promise<number | undefined> {
    const claim = memo ?? (await claimOf(primary, input.claimId));
    if (!claim) return undefined;
    await primary("batches").insert(historyRow(input, claim, "rejected", 0, rejected, at)).onConflict("id").ignore();
    return Number(claim.claimed_at);
  }

  /** Splits signatures outside the claim into already signed and foreign ones. */
  async function refusedOutside(trx: Knex | Knex.Transaction, outside: CommitInput["signatures"]): Promise<CommitResult["rejections"]> {
    if (outside.length === 0) return [];
    const signed = new Set<number>();
    for (let i = 0; i < outside.length; i += SIGNATURE_INSERT_ROWS) {
      const ids = outside.slice(i, i + SIGNATURE_INSERT_ROWS).map((s) => s.recordId);
      const rows = await run<{ record_id: number | string }>(trx, `SELECT record_id FROM signatures WHERE record_id IN (${ids.map(() => "?").join(", ")})`, ids);
      for (const r of rows) signed.add(Number(r.record_id));
    }
    return outside.map((s) => ({ recordId: s.recordId, reason: signed.has(s.recordId) ? ("already_signed" as const) : ("not_in_claim" as const) }));
  }

  /**
   * The signatures to verify and their payloads: the claim-time sample's records among
   * `accepted`, topped up with records drawn now (read from the database) when a partial
   * commit holds fewer than COMMIT_SAMPLE of them. Undefined when a drawn id is no record.
   */
  async function probesFor(trx: Knex | Knex.Transaction, accepted: CommitInput["signatures"], drawn: ReadonlyMap<number, Buffer> | undefined) {
    const payloads = new Map<number, Buffer>();
    const signatures: CommitInput["signatures"][number][] = [];
    const rest: CommitInput["signatures"][number][] = [];
    for (const sig of accepted) {
      const payload = drawn?.get(sig.recordId);
      if (payload) {
        payloads.set(sig.recordId, payload);
        signatures.push(sig);
      } else rest.push(sig);
    }
    const missing = Math.min(COMMIT_SAMPLE, accepted.length) - signatures.length;
    if (missing > 0) {
      const more = sample(rest, missing);
      const rows = await run<{ id: number | string; payload: Buffer }>(trx, `SELECT id, payload FROM records WHERE id IN (${more.map(() => "?").join(", ")})`, more.map((p) => p.recordId));
      if (rows.length !== more.length) return undefined;
      for (const r of rows) payloads.set(Number(r.id), Buffer.from(r.payload));
      signatures.push(...more);
    }
    return { payloads, signatures };
  }

  /**
   * The commit of a claim made by this process, on MySQL/MariaDB: the same checks and writes as
   * the transaction in `commit`, in three round trips. The claim is known from memory, so the
   * checks read nothing (unless signatures fall outside the claim, or a partial commit needs
   * more of its sample) and run before the transaction opens; then the stored procedure
   * keymesh_open_batch_commit (migration collection/0006) opens it, closes the claim, raises
   * the key's fence and writes the history row; then the signatures, then COMMIT.
   */
  async function commitHeld(input: CommitInput, claim: ClaimMemo, now: () => number, lease: LeaseView, check: SignatureCheck): Promise<CommitResult> {
    const refuseAll = (reason: RejectReason) => refusedWhole(input, reason);
    if (now() >= lease.validUntil) return refuseAll("stale_fence");
    const { accepted, outside } = splitByClaim(input.signatures, claim);
    const rejections = await refusedOutside(primary, outside);
    if (accepted.length === 0) return { stored: 0, rejections };
    const probes = await probesFor(primary, accepted, claim.sample);
    if (!probes) return refuseAll("not_in_claim");
    if (!(await check(lease.publicKey, probes.payloads, probes.signatures))) return refuseAll("invalid_signature");

    return withHeldConnection(primary, async (conn) => {
      // Dated once checked, as the transaction opens (see `commit` on why a live lease now suffices).
      const at = now();
      if (at >= lease.validUntil) return refuseAll("stale_fence");
      const h = historyRow(input, claim, "committed", accepted.length, rejections.length, at);
      const newKey = !fenceRows.has(input.keyId);
      const [opened] = await conn.callOpening<{ status: string }>("CALL keymesh_open_batch_commit(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        newKey, input.claimId, accepted.length >= Number(claim.claimed), input.keyId, h.fence, at, h.id, h.job_id, h.size, h.claimed, h.start_at, h.stored, h.rejected, h.executor,
      ]);
      // Whatever the batch's fate, the key's fence row exists now (created before the transaction).
      if (newKey) fenceRows.add(input.keyId);
      switch (opened?.status) {
        case "open":
          break;
        case "claim_closed":
          throw new Refusal("not_in_claim", true);
        case "stale_fence":
          throw new Refusal("stale_fence");
        case "batch_id_committed":
          throw new InvalidInputError(`batch_id ${input.batchId} was already committed; every batch needs its own id`);
        default:
          throw new Error(`keymesh_open_batch_commit answered ${JSON.stringify(opened)}`);
      }
      await insertSignatures(conn.run, input, accepted, at);
      await conn.end("COMMIT");
      return { stored: accepted.length, rejections, startedAt: Number(claim.claimed_at), decidedAt: at };
    });
  }

  /**
   * Locks the row `seed` of `collection_locks` in the seed's transaction (creating it if it is
   * missing), however long an earlier seed holds it, but no longer than the call: the lock is
   * asked for a second at a time, and `signal` aborting between two tries gives up.
   */
  async function takeSeedLock(trx: Knex.Transaction, signal?: AbortSignal): Promise<void> {
    await trx.raw("SET SESSION innodb_lock_wait_timeout = 1");
    try {
      for (;;) {
        try {
          await trx.raw("INSERT INTO collection_locks (name) VALUES ('seed') ON DUPLICATE KEY UPDATE name = name");
          return;
        } catch (err) {
          // A lock wait timeout rolls back the statement only: the transaction goes on.
          if (!isLockWaitTimeout(err)) throw err;
          if (signal?.aborted) throw abortError(signal);
        }
      }
    } finally {
      // Best effort: a connection that cannot take this is broken, and the pool drops it.
      await trx.raw("SET SESSION innodb_lock_wait_timeout = DEFAULT").catch(() => undefined);
    }
  }

  return {
    async seed(count, payloadSize, signal) {
      const now = Date.now();
      return primary.transaction(async (trx) => {
        // One seed at a time, until it commits (migration 0008): ids then grow in commit order,
        // so no seed's records can appear below a range a claim already took.
        if (mysql) await takeSeedLock(trx, signal);
        for (let done = 0; done < count; done += insertChunk) {
          // SQLite runs each insert synchronously on this thread: give the loop a turn.
          await setImmediate();
          if (signal?.aborted) throw abortError(signal);
          const n = Math.min(insertChunk, count - done);
          const rows = Array.from({ length: n }, () => ({ payload: randomBytes(payloadSize), created_at: now }));
          await trx("records").insert(rows);
        }
        return count;
      });
    },

    async claim(c) {
      const rows = (await oneAtATime(() => claimFresh(c))) ?? (await primary.transaction(async (trx) => (await reclaim(trx, c)) ?? { rows: [], first: 0 }));
      if (rows.rows.length > 0) {
        memos.remember(c.claimId, {
          job_id: c.jobId, claimant: c.claimant, size: c.size, claimed: rows.rows.length, claimed_at: c.now,
          first_id: rows.first, last_id: rows.rows[rows.rows.length - 1]!.id, state: "open",
          sample: new Map(sample(rows.rows, COMMIT_SAMPLE).map((r) => [r.id, r.payload])),
        });
      }
      return rows.rows;
    },

    async commit(input, now, lease, check) {
      const refuseAll = (reason: RejectReason) => refusedWhole(input, reason);
      const memo = memos.take(input.claimId);
      // On MariaDB, a claim made here (its record is in memory) commits through the stored
      // procedure: three round trips. Otherwise the statements go one by one.
      const held = mysql && memo ? commitHeld(input, memo, now, lease, check) : undefined;
      // The key's row in our fence table exists before the transaction locks it, so concurrent
      // first commits of a key never race to create it inside their transactions (the
      // procedure creates it, when asked, before it opens the transaction).
      if (!held && !fenceRows.has(input.keyId)) {
        await primary("collection_key_fences").insert({ key_id: input.keyId, fence: 0, updated_at: now() }).onConflict("key_id").ignore();
        fenceRows.add(input.keyId);
      }
      const result = await (held ?? primary
        .transaction(async (trx): Promise<CommitResult> => {
          const at = now();
          // The token says the lease runs until validUntil; leases run without a gap from grant
          // to lapse and a new grant needs the old lease gone, so if it is live at this moment,
          // after the batch was signed, the signing happened under it and any later lease of
          // the key starts after `at`, recorded as committed_at.
          if (at >= lease.validUntil) return refuseAll("stale_fence");

          // Records outside the claim's range, or a claim no longer open (committed, or
          // superseded after it expired), are refused before anything else, so invented or
          // foreign record ids can neither dodge the signature sample nor be written. The claim
          // is known from ClaimBatch when it was made here; otherwise its row is read.
          const claim = memo ?? (await claimOf(trx, input.claimId, forUpdate));
          const { accepted, outside } = splitByClaim(input.signatures, claim);
          const rejections = await refusedOutside(trx, outside);
          if (accepted.length === 0) return { stored: 0, rejections };

          // A sample, not one: a batch signed by another key, or with forged signatures mixed in,
          // is refused whole. The sample was drawn when the records were claimed (the
          // executor cannot know it); records of a partial commit it misses are drawn now.
          // An id inside the range that is no record is refused with the batch.
          const probes = await probesFor(trx, accepted, memo?.sample);
          if (!probes) return refuseAll("not_in_claim");
          if (!(await check(lease.publicKey, probes.payloads, probes.signatures))) return refuseAll("invalid_signature");

          // Close the claim (its row stays locked until we commit: a stale claim is taken over
          // only after). Every record of the claim stored: it is done; fewer: the rest of its
          // range is claimable again at once. Not open any more: taken over after it expired.
          const whole = accepted.length >= Number(claim!.claimed);
          const closed = await run(trx, `UPDATE claims SET ${whole ? "state = 'committed'" : "expires_at = 0"} WHERE id = ? AND state = 'open'`, [input.claimId]);
          if (closed.affectedRows !== 1) throw new Refusal("not_in_claim", true);

          // Raise the highest fence accepted for this key, unless this or a newer lease already
          // committed (one batch per lease). The row stays locked until we commit, so commits of
          // one key are serialised in fence order and a stale holder can never land after a
          // newer one.
          const raised = await run(trx, "UPDATE collection_key_fences SET fence = ?, updated_at = ? WHERE key_id = ? AND fence < ?", [
            fenceValue(input.fence), at, input.keyId, fenceValue(input.fence),
          ]);
          if (raised.affectedRows !== 1) throw new Refusal("stale_fence");

          await insertSignatures((sql, params) => run(trx, sql, params), input, accepted, at);
          await insertHistory(trx, historyRow(input, claim, "committed", accepted.length, rejections.length, at));
          return { stored: accepted.length, rejections, startedAt: Number(claim!.claimed_at), decidedAt: at };
        }))
        .catch(async (err: unknown): Promise<CommitResult> => {
          if (!(err instanceof Refusal)) throw err;
          if (err.closed) return { stored: 0, rejections: await refusedOutside(primary, input.signatures) };
          return refuseAll(err.reason);
        });
      if (result.stored === 0) {
        const decidedAt = now();
        return { ...result, startedAt: await recordRefusal(input, memo, result.rejections.length, decidedAt), decidedAt };
      }
      return result;
    },

    async releaseClaim(claimId) {
      const claim = memos.take(claimId) ?? (await claimOf(primary, claimId));
      if (!claim || claim.state !== "open") return 0;
      const n = await primary("claims").where({ id: claimId, state: "open" }).update({ expires_at: 0 });
      return n === 1 ? Number(claim.claimed) : 0;
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
      const [claimed] = await db.replica("claims").where("state", "open").andWhere("expires_at", ">=", now).sum({ n: "claimed" });
      const n = (r: unknown) => Number((r as { n: number | string | null }).n ?? 0);
      return { total: n(total), signed: n(signed), claimed: n(claimed) };
    },

    async export(afterId, limit) {
      const rows = await db.replica("records as r")
        .leftJoin("signatures as s", "s.record_id", "r.id")
        .select("r.id", "r.payload", "s.signature", "s.key_id", "s.fence", "s.batch_id", "s.signed_at")
        .where("r.id", ">", afterId)
        .orderBy("r.id")
        .limit(limit);
      return rows.map(toExported);
    },

    async committedBatches(jobId) {
      const rows = await db.replica("batches").select("id").where({ job_id: jobId, outcome: "committed" }).orderBy([{ column: "committed_at" }, { column: "id" }]);
      return rows.map((r: { id: string }) => r.id);
    },

    async exportBatch(batchId) {
      // signatures_batch_idx holds (batch_id, record_id): the batch's rows, already in id order.
      const rows = await db.replica("signatures as s")
        .join("records as r", "r.id", "s.record_id")
        .select("r.id", "r.payload", "s.signature", "s.key_id", "s.fence", "s.batch_id", "s.signed_at")
        .where("s.batch_id", batchId)
        .orderBy("s.record_id");
      return rows.map(toExported);
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
