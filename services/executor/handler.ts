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
  interrupted: JobState.INTERRUPTED,
};

/**
 * The shortest interval between two WatchJob messages, whatever the caller asks: every
 * message of a job run elsewhere costs a jobs read and Collection's COUNTs.
 */
export const WATCH_MIN_INTERVAL_MS = 250;
/** A watched job run elsewhere is read at most this often (its commits cannot be followed). */
export const WATCH_REMOTE_INTERVAL_MS = 1000;

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
      const interval = Math.max(req.intervalMs || 500, WATCH_MIN_INTERVAL_MS);
      try {
        let { job, progress } = await jobProgress(req.jobId);
        yield { progress: progress as JobProgress };
        while (!signal.aborted && job.state === "running") {
          const tracker = deps.executor.follow(req.jobId);
          if (tracker) {
            // Run here: a message after each commit, at most one per interval.
            await Promise.race([tracker.changed(), setTimeout(5 * interval, undefined, { signal }).catch(() => undefined)]);
            await setTimeout(interval, undefined, { signal }).catch(() => undefined);
            const snap = tracker.snapshot();
            job = (await deps.jobs.get(req.jobId)) ?? job;
            yield { progress: { ...toProto(snap), state: STATES[job.state === "running" ? snap.state : job.state] } as JobProgress };
            if (snap.state !== "running") return;
          } else {
            // Run elsewhere: read the job and the totals, no more often than the remote floor.
            await setTimeout(Math.max(interval, WATCH_REMOTE_INTERVAL_MS), undefined, { signal }).catch(() => undefined);
            if (signal.aborted) return;
            ({ job, progress } = await jobProgress(req.jobId));
            yield { progress: progress as JobProgress };
          }
        }
      } catch (err) {
        throw toConnectError(err);
      }
    },
  };
}
