import { withRetries } from "../shared/retry.js";
import type { Database } from "../shared/storage/database.js";
import { isTransientDbError } from "../shared/storage/errors.js";

/** A signing job as stored. */
export interface JobRow {
  readonly id: string;
  readonly batchSize: number;
  readonly concurrency: number;
  readonly leaseTtlMs: number;
  /** "interrupted": running, but no executor has refreshed its heartbeat for JOB_STALE_MS. */
  readonly state: "running" | "succeeded" | "failed" | "interrupted";
  readonly createdAt: number;
  readonly finishedAt: number | null;
  readonly traceId: string | null;
  readonly error: string | null;
}

/** Persistence of jobs: the one thing executors working on one job share besides records. */
export interface JobStore {
  create(job: Omit<JobRow, "state" | "finishedAt" | "error">): Promise<void>;
  get(id: string, now?: number): Promise<JobRow | undefined>;
  /** An executor is working on the job right now. */
  heartbeat(id: string, at: number): Promise<void>;
  /**
   * Records how a running job ended. Idempotent, so a connection lost on the way is retried
   * (a few times, backing off) rather than turning a finished job into a failed one.
   */
  finish(id: string, state: "succeeded" | "failed", at: number, error?: string): Promise<void>;
}

/** Pauses between attempts to record a job's end when the database drops the connection. */
const FINISH_RETRY_MS = [50, 200, 500, 1000];

/** Executors refresh a job's heartbeat this often while they work on it. */
export const JOB_HEARTBEAT_MS = 1000;
/** A running job whose heartbeat is older than this has no executor: it is interrupted. */
export const JOB_STALE_MS = 5000;

/** The knex implementation. */
export function createJobStore(db: Database): JobStore {
  const toJob = (r: Record<string, unknown>, now: number): JobRow => ({
    id: String(r.id),
    batchSize: Number(r.batch_size),
    concurrency: Number(r.concurrency),
    leaseTtlMs: Number(r.lease_ttl_ms),
    state: r.state === "running" && Number(r.heartbeat_at) < now - JOB_STALE_MS ? "interrupted" : (r.state as JobRow["state"]),
    createdAt: Number(r.created_at),
    finishedAt: r.finished_at == null ? null : Number(r.finished_at),
    traceId: (r.trace_id as string | null) ?? null,
    error: (r.error as string | null) ?? null,
  });
  return {
    async create(job) {
      await db.primary("jobs").insert({
        id: job.id,
        batch_size: job.batchSize,
        concurrency: job.concurrency,
        lease_ttl_ms: job.leaseTtlMs,
        state: "running",
        created_at: job.createdAt,
        heartbeat_at: job.createdAt,
        trace_id: job.traceId,
      });
    },
    async get(id, now = Date.now()) {
      const row = await db.primary("jobs").where({ id }).first();
      return row && toJob(row, now);
    },
    async heartbeat(id, at) {
      await db.primary("jobs").where({ id, state: "running" }).update({ heartbeat_at: at });
    },
    async finish(id, state, at, error) {
      await withRetries(() => db.primary("jobs").where({ id, state: "running" }).update({ state, finished_at: at, error: error ?? null }), {
        pausesMs: FINISH_RETRY_MS,
        retryable: isTransientDbError,
      });
    },
  };
}
