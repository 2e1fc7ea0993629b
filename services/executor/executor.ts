import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import { setTimeout as delay } from "node:timers/promises";
import { ConnectError, type Client } from "@connectrpc/connect";
import { context, SpanStatusCode, trace, type Span } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import type { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import type { SigningService } from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { NotFoundError } from "../shared/errors.js";
import { toDbError } from "../shared/storage/database.js";
import { jobProgress, jobsRunning, leasesHeld } from "../shared/telemetry/metrics-signing.js";
import { createBatchActivity, type BatchActivity } from "./batch-activity.js";
import { releaseLease, runBatch, type BatchContext, type BatchOutcome, type HeldLease } from "./batch.js";
import { JOB_HEARTBEAT_MS, type JobRow, type JobStore } from "./job-store.js";
import { createProgress, type Progress, type ProgressTracker } from "./progress.js";
import { createBatchStream } from "./batch-stream.js";
import { createLeaseStream } from "./lease-stream.js";

export type { Progress } from "./progress.js";

/** Dependencies of the executor. */
export interface ExecutorDeps {
  readonly keys: Client<typeof KeyManagementService>;
  readonly collection: Client<typeof CollectionService>;
  readonly signing: Client<typeof SigningService>;
  readonly jobs: JobStore;
  /** This executor instance's id (holder of leases, claimant of records). */
  readonly executorId: string;
  readonly logger: Logger;
  readonly now?: () => number;
}

/**
 * What a caller asks for, with defaults applied. The ranges are executor_service.proto's rules
 * (batch size 1-10000 for a new job, concurrency 1-256, lease TTL 1000-600000 ms), checked
 * before a request reaches the handler.
 */
export interface RunSpec {
  readonly jobId?: string;
  readonly batchSize: number;
  readonly concurrency: number;
  readonly leaseTtlMs: number;
  readonly progressIntervalMs: number;
}

const tracer = trace.getTracer("keymesh.executor");
const MAX_CONSECUTIVE_FAILURES = 300;
/** The job span links to at most this many batch traces (the rest are found by job id). */
const MAX_JOB_LINKS = 1000;
/** How often the job-wide totals (two COUNTs in Collection) are read for progress. */
const TOTALS_REFRESH_MS = 2000;
/** How long idle workers of one job share a read of the totals. */
const TOTALS_SHARED_MS = 200;
/** The longest an idle worker waits before it tries to claim again (batches elsewhere end unseen). */
const IDLE_POLL_MS = 200;

/** Waits `ms`, or less when `signal` aborts; never throws. */
const sleep = (ms: number, signal: AbortSignal) => delay(ms, undefined, { signal }).catch(() => undefined);

/**
 * The streaming executor: the job loop. Each of `concurrency` workers runs one batch after
 * another (batch.ts) until no unsigned record is left; progress (progress.ts) streams back
 * every `progressIntervalMs`. Records are never all in memory: one batch per worker.
 */
export function createExecutor(deps: ExecutorDeps) {
  const now = deps.now ?? Date.now;
  /** Jobs this process is running now, for WatchJob to follow their commits. */
  const local = new Map<string, Set<ProgressTracker>>();

  async function startOrJoin(spec: RunSpec, traceId: string): Promise<JobRow> {
    if (spec.jobId) {
      const job = await deps.jobs.get(spec.jobId);
      if (!job) throw new NotFoundError(`job ${spec.jobId} does not exist`);
      return job;
    }
    const id = `job-${randomUUID()}`;
    await deps.jobs.create({ id, batchSize: spec.batchSize, concurrency: spec.concurrency, leaseTtlMs: spec.leaseTtlMs, createdAt: now(), traceId });
    return (await deps.jobs.get(id))!;
  }

  /** Reads the job-wide totals into `progress`; undefined when Collection did not answer. */
  async function readTotals(progress: ProgressTracker, signal: AbortSignal) {
    const g = await deps.collection.getProgress({}, { signal }).catch(() => undefined);
    if (g) progress.totals(Number(g.total), Number(g.signed));
    return g;
  }

  /**
   * The totals as a job's idle workers ask for them: one read at a time, and a read less than
   * TOTALS_SHARED_MS old is shared, unless a batch of the job ended here since it began (its
   * commit may be missing from it). Two COUNTs over every record and signature are not cheap,
   * and eight workers finding no records at once would otherwise each run them.
   */
  function sharedTotals(progress: ProgressTracker, activity: BatchActivity, signal: AbortSignal) {
    let last: { at: number; ended: number; read: ReturnType<typeof readTotals> } | undefined;
    return () => {
      if (!last || last.ended !== activity.ended || now() - last.at >= TOTALS_SHARED_MS) {
        last = { at: now(), ended: activity.ended, read: readTotals(progress, signal) };
      }
      return last.read;
    };
  }

  type Totals = NonNullable<Awaited<ReturnType<typeof readTotals>>>;
  const isDone = (g: Totals | undefined): g is Totals => g !== undefined && g.signed >= g.total;

  /**
   * What a worker that found nothing to claim does: the totals when they say every record is
   * signed (the job is done), else undefined after at most IDLE_POLL_MS, and the worker claims
   * again (batches of other executors end unseen, and may give records back). It looks at the
   * totals when no batch of the job is in flight here and one that claimed records has ended
   * since it last looked: while batches run they may sign the last records or give some back,
   * and reading before they end would only be read again. Attempts that claimed nothing do not
   * count: idle workers make them all the time, and waking on them would be a busy loop.
   */
  async function idle(batch: BatchContext, activity: BatchActivity, totals: () => ReturnType<typeof readTotals>): Promise<Totals | undefined> {
    const deadline = now() + Math.min(IDLE_POLL_MS, batch.job.leaseTtlMs / 4);
    /** `activity.ended` as of the totals this worker last looked at (none yet). */
    let looked = -1;
    for (;;) {
      if (activity.inFlight === 0 && activity.ended > looked) {
        looked = activity.ended;
        const g = await totals();
        if (isDone(g)) return g;
      }
      const left = deadline - now();
      if (left <= 0 || batch.signal.aborted) return undefined;
      await activity.quiet(looked, left, batch.signal);
    }
  }

  /**
   * One worker: batches until the records run out or the job stops. Returns the totals that
   * showed every record signed, or undefined when the job stopped first.
   */
  async function worker(index: number, batch: BatchContext, activity: BatchActivity, totals: () => ReturnType<typeof readTotals>): Promise<Totals | undefined> {
    const { signal } = batch;
    let failures = 0;
    let outcome: BatchOutcome = "empty";
    let waitingSince = now();
    let held: HeldLease | undefined;
    await sleep(index * 5, signal);
    try {
      while (!signal.aborted) {
        if (outcome !== "busy") waitingSince = now();
        const ended = activity.begin();
        try {
          ({ outcome, held } = await runBatch(batch, waitingSince, held));
        } catch (err) {
          outcome = "abandoned";
          held = undefined;
          deps.logger.warn({ job: batch.job.id, err: ConnectError.from(err).rawMessage }, "batch failed before leasing");
        } finally {
          ended(outcome !== "empty" && outcome !== "busy");
        }
        if (outcome === "committed" || outcome === "rejected") failures = 0;
        if (outcome === "abandoned" && ++failures >= MAX_CONSECUTIVE_FAILURES) throw new Error("too many consecutive batch failures");
        if (outcome === "busy") await sleep(10 + Math.random() * 40, signal);
        if (outcome === "abandoned") await sleep(Math.min(1000, 50 * failures), signal);
        if (outcome === "empty") {
          const done = await idle(batch, activity, totals);
          if (done) return done;
        }
      }
      return undefined;
    } finally {
      if (held) {
        leasesHeld.add(-1);
        await releaseLease(batch, held);
      }
    }
  }

  /** Runs the workers to the end of the job and records how it ended. */
  async function runWorkers(spec: RunSpec, batch: BatchContext, jobSpan: Span): Promise<void> {
    const { progress, signal, job } = batch;
    try {
      const activity = createBatchActivity();
      const totals = sharedTotals(progress, activity, signal);
      const ends = await Promise.all(Array.from({ length: spec.concurrency }, (_, i) => worker(i, batch, activity, totals)));
      // Every worker returned the totals that showed the job done (progress has them already:
      // every read goes into it), unless the job stopped.
      const g = ends.find((e) => e !== undefined);
      if (signal.aborted || !g) return;
      await deps.jobs.finish(job.id, "succeeded", now());
      progress.finish("succeeded");
    } catch (err) {
      // A dropped connection reads as such, not as the SQL text the driver wraps around it.
      const failure = toDbError(err);
      const message = failure instanceof Error ? failure.message : String(failure);
      progress.finish("failed", message);
      jobSpan.setStatus({ code: SpanStatusCode.ERROR, message });
      await deps.jobs.finish(job.id, "failed", now(), message).catch(() => undefined);
    }
  }

  /** Runs (or joins) a job, yielding progress until it is done or `signal` aborts. */
  async function* run(spec: RunSpec, signal: AbortSignal): AsyncGenerator<Progress> {
    const jobSpan = tracer.startSpan("signing.job", { attributes: { "keymesh.executor": deps.executorId } });
    // Empty when tracing is off (the no-op tracer hands out an all-zero, invalid context).
    const traceId = trace.isSpanContextValid(jobSpan.spanContext()) ? jobSpan.spanContext().traceId : "";
    let job: JobRow;
    try {
      job = await startOrJoin(spec, traceId);
    } catch (err) {
      jobSpan.end();
      throw err;
    }
    jobSpan.setAttributes({ "keymesh.job_id": job.id, "keymesh.batch_size": job.batchSize });
    // Joining an interrupted job resumes it: this executor's heartbeat makes it running again.
    const progress = createProgress({ jobId: job.id, state: job.state === "interrupted" ? "running" : job.state, traceId, batchSize: job.batchSize, now });
    const beat = () => void deps.jobs.heartbeat(job.id, now()).catch(() => undefined);
    beat();
    const heartbeat = setInterval(beat, JOB_HEARTBEAT_MS);
    heartbeat.unref();
    const trackers = local.get(job.id) ?? new Set<ProgressTracker>();
    trackers.add(progress);
    local.set(job.id, trackers);
    jobsRunning.add(1);
    const report = () => {
      const s = progress.snapshot();
      if (s.totalRecords > 0) jobProgress.set(s.signedRecords / s.totalRecords, { job_id: job.id });
      return s;
    };
    const stop = new AbortController();
    // Every worker's calls and sleeps listen on the job's signal at once (a lease, a claim and a
    // sleep each): a shared signal by design, not a leak.
    setMaxListeners(4 * spec.concurrency + 16, stop.signal);
    const onAbort = () => stop.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    // The stream lives as long as the job: its RPC span belongs to the job's trace, not to
    // whichever batch happened to open it.
    const jobContext = trace.setSpan(context.active(), jobSpan);
    const stream = createBatchStream(deps.signing, jobContext);
    const leases = createLeaseStream(deps.keys, jobContext);
    /** Links from the job span to its batches, up to what a span can reasonably hold. */
    let linked = 0;
    const batch: BatchContext = {
      keys: leases,
      stream,
      job,
      executorId: deps.executorId,
      progress,
      jobContext,
      onBatchSpan: (span) => {
        if (linked++ < MAX_JOB_LINKS) jobSpan.addLink({ context: span });
      },
      signal: stop.signal,
      now,
    };
    const workers = runWorkers(spec, batch, jobSpan).finally(() => stop.abort());

    try {
      await readTotals(progress, stop.signal);
      let lastRead = now();
      while (!stop.signal.aborted) {
        yield report();
        await sleep(spec.progressIntervalMs, stop.signal);
        if (now() - lastRead >= TOTALS_REFRESH_MS) {
          lastRead = now();
          await readTotals(progress, stop.signal);
        }
      }
      await workers;
      yield report();
    } finally {
      stop.abort();
      signal.removeEventListener("abort", onAbort);
      await workers;
      stream.close();
      leases.close();
      clearInterval(heartbeat);
      trackers.delete(progress);
      if (trackers.size === 0) local.delete(job.id);
      progress.close();
      jobSpan.setAttributes({ "keymesh.signed": progress.signedByThisExecutor, "keymesh.batches": progress.batchesCommitted, "keymesh.batch_spans": linked });
      jobsRunning.add(-1);
      jobProgress.remove({ job_id: job.id });
      jobSpan.end();
    }
  }

  /** A tracker of `jobId` if this process is running it (WatchJob follows its commits). */
  function follow(jobId: string): ProgressTracker | undefined {
    return local.get(jobId)?.values().next().value;
  }

  return { run, follow };
}
