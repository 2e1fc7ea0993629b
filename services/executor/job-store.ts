import type { Database } from "../shared/storage/database.js";

/** A signing job as stored. */
export interface JobRow {
  readonly id: string;
  readonly batchSize: number;
  readonly concurrency: number;
  readonly leaseTtlMs: number;
  readonly state: "running" | "succeeded" | "failed";
  readonly createdAt: number;
  readonly finishedAt: number | null;
  readonly traceId: string | null;
  readonly error: string | null;
}

/** Persistence of jobs: the one thing executors working on one job share besides records. */
export interface JobStore {
  create(job: Omit<JobRow, "state" | "finishedAt" | "error">): Promise<void>;
  get(id: string): Promise<JobRow | undefined>;
  finish(id: string, state: "succeeded" | "failed", at: number, error?: string): Promise<void>;
}

/** The knex implementation. */
export function createJobStore(db: Database): JobStore {
  const toJob = (r: Record<string, unknown>): JobRow => ({
    id: String(r.id),
    batchSize: Number(r.batch_size),
    concurrency: Number(r.concurrency),
    leaseTtlMs: Number(r.lease_ttl_ms),
    state: r.state as JobRow["state"],
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
        trace_id: job.traceId,
      });
    },
    async get(id) {
      const row = await db.primary("jobs").where({ id }).first();
      return row && toJob(row);
    },
    async finish(id, state, at, error) {
      await db.primary("jobs").where({ id, state: "running" }).update({ state, finished_at: at, error: error ?? null });
    },
  };
}
