import { setTimeout } from "node:timers/promises";
import type { ServiceImpl } from "@connectrpc/connect";
import { ExecutorService, JobState, type JobProgress } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { JobProgressSchema } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import { NotFoundError, mapErrors, toConnectError } from "../shared/errors.js";
import type { Progress } from "./executor.js";
import type { JobRow, JobStore } from "./job-store.js";
import type { createExecutor } from "./executor.js";
import type { Client } from "@connectrpc/connect";
import type { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";

/** Dependencies of the ExecutorService handler. */
export interface ExecutorHandlerDeps {
  readonly executor: ReturnType<typeof createExecutor>;
  readonly jobs: JobStore;
  readonly collection: Client<typeof CollectionService>;
  /** Aborted when the process shuts down: running jobs stop and their streams end. */
  readonly shutdown: AbortSignal;
}

const STATES: Record<JobRow["state"], JobState> = {
  running: JobState.RUNNING,
  succeeded: JobState.SUCCEEDED,
  failed: JobState.FAILED,
};

const toProto = (p: Progress): MessageInitShape<typeof JobProgressSchema> => ({
  jobId: p.jobId,
  state: STATES[p.state],
  totalRecords: BigInt(p.totalRecords),
  signedRecords: BigInt(p.signedRecords),
  signedByThisExecutor: BigInt(p.signedByThisExecutor),
  batchesCommitted: p.batchesCommitted,
  batchesAbandoned: p.batchesAbandoned,
  batchesInFlight: p.batchesInFlight,
  keysBusy: p.keysBusy,
  rejectedSignatures: p.rejectedSignatures,
  recordsPerSecond: p.recordsPerSecond,
  elapsedMs: BigInt(p.elapsedMs),
  traceId: p.traceId,
  batchSize: p.batchSize,
  error: p.error,
});

/** ExecutorService: runs signing jobs and streams their progress. */
export function createExecutorHandler(deps: ExecutorHandlerDeps): ServiceImpl<typeof ExecutorService> {
  async function jobProgress(id: string): Promise<{ job: JobRow; progress: MessageInitShape<typeof JobProgressSchema> }> {
    const job = await deps.jobs.get(id);
    if (!job) throw new NotFoundError(`job ${id} does not exist`);
    const g = await deps.collection.getProgress({});
    return {
      job,
      progress: {
        jobId: job.id,
        state: STATES[job.state],
        totalRecords: g.total,
        signedRecords: g.signed,
        traceId: job.traceId ?? "",
        batchSize: job.batchSize,
        error: job.error ?? "",
        elapsedMs: BigInt((job.finishedAt ?? Date.now()) - job.createdAt),
      },
    };
  }

  return {
    async *runJob(req, ctx) {
      const signal = AbortSignal.any([ctx.signal, deps.shutdown]);
      try {
        const spec = {
          jobId: req.jobId || undefined,
          batchSize: req.spec?.batchSize ?? 0,
          concurrency: req.spec?.concurrency || 4,
          leaseTtlMs: req.spec?.leaseTtlMs || 10_000,
          progressIntervalMs: req.progressIntervalMs || 250,
        };
        for await (const p of deps.executor.run(spec, signal)) yield { progress: toProto(p) as JobProgress };
      } catch (err) {
        throw toConnectError(err);
      }
    },

    getJob: mapErrors(async (req) => {
      const { job, progress } = await jobProgress(req.jobId);
      return {
        spec: { batchSize: job.batchSize, concurrency: job.concurrency, leaseTtlMs: job.leaseTtlMs },
        progress,
        createdAtMs: BigInt(job.createdAt),
        finishedAtMs: BigInt(job.finishedAt ?? 0),
      };
    }),

    async *watchJob(req, ctx) {
      const signal = AbortSignal.any([ctx.signal, deps.shutdown]);
      const interval = req.intervalMs || 500;
      try {
        while (!signal.aborted) {
          const { job, progress } = await jobProgress(req.jobId);
          yield { progress: progress as JobProgress };
          if (job.state !== "running") return;
          await setTimeout(interval, undefined, { signal }).catch(() => undefined);
        }
      } catch (err) {
        throw toConnectError(err);
      }
    },
  };
}
