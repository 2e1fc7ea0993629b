import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { context, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { RejectionReason } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import type { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import type { SigningService } from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { InvalidInputError, NotFoundError } from "../shared/domain-errors.js";
import { failpoint } from "../shared/failpoints.js";
import { jobProgress, jobsRunning, leasesHeld, leaseWait } from "../shared/telemetry/metrics-signing.js";
import type { JobRow, JobStore } from "./job-store.js";
import { createSignStream } from "./sign-stream.js";

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

/** What a caller asks for. */
export interface RunSpec {
  readonly jobId?: string;
  readonly batchSize: number;
  readonly concurrency: number;
  readonly leaseTtlMs: number;
  readonly progressIntervalMs: number;
}

/** One progress report of this executor on a job. */
export interface Progress {
  jobId: string;
  state: JobRow["state"];
  totalRecords: number;
  signedRecords: number;
  signedByThisExecutor: number;
  batchesCommitted: number;
  batchesAbandoned: number;
  batchesInFlight: number;
  keysBusy: number;
  rejectedSignatures: number;
  recordsPerSecond: number;
  elapsedMs: number;
  traceId: string;
  batchSize: number;
  error: string;
}

type BatchOutcome = "committed" | "rejected" | "abandoned" | "empty" | "busy";

const tracer = trace.getTracer("keymesh.executor");
const MAX_CONSECUTIVE_FAILURES = 300;
/** How often the job-wide totals (two COUNTs in Collection) are refreshed for progress. */
const TOTALS_REFRESH_MS = 2000;

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });

/** Validates a job spec; batch size is fixed for the job's lifetime. */
export function checkSpec(spec: RunSpec): void {
  if (!spec.jobId && (spec.batchSize < 1 || spec.batchSize > 10_000)) {
    throw new InvalidInputError(`batch_size must be 1-10000, got ${spec.batchSize}`);
  }
  if (spec.concurrency < 1 || spec.concurrency > 256) throw new InvalidInputError(`concurrency must be 1-256, got ${spec.concurrency}`);
  if (spec.leaseTtlMs < 1000 || spec.leaseTtlMs > 600_000) throw new InvalidInputError(`lease_ttl_ms must be 1000-600000, got ${spec.leaseTtlMs}`);
}

/**
 * The streaming executor. Each of `concurrency` workers loops: lease the LRU key, claim a
 * batch, sign it on the shared signing stream, commit under the lease's fence, release. The
 * lease is renewed while the batch runs; a batch whose renewal fails is abandoned (its claim
 * released, nothing committed). Records are never all in memory: one batch per worker.
 */
export function createExecutor(deps: ExecutorDeps) {
  const now = deps.now ?? Date.now;

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

  /** Runs (or joins) a job, yielding progress until it is done or `signal` aborts. */
  async function* run(spec: RunSpec, signal: AbortSignal): AsyncGenerator<Progress> {
    checkSpec(spec);
    const jobSpan = tracer.startSpan("signing.job", { attributes: { "keymesh.executor": deps.executorId } });
    const jobCtx = trace.setSpan(context.active(), jobSpan);
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
    const started = now();
    jobsRunning.add(1);
    const p: Progress = {
      jobId: job.id, state: job.state, totalRecords: 0, signedRecords: 0, signedByThisExecutor: 0, batchesCommitted: 0,
      batchesAbandoned: 0, batchesInFlight: 0, keysBusy: 0, rejectedSignatures: 0, recordsPerSecond: 0, elapsedMs: 0,
      traceId, batchSize: job.batchSize, error: "",
    };
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    const stream = createSignStream(deps.signing);
    const headers = { "x-keymesh-executor": deps.executorId };
    const claimTtlMs = job.leaseTtlMs;

    async function refreshTotals() {
      const g = await deps.collection.getProgress({}, { signal: stop.signal });
      p.totalRecords = Number(g.total);
      p.signedRecords = Number(g.signed);
      return g;
    }

    /** `wait.since`: when the worker began waiting for a lease (busy retries included). */
    async function runBatch(wait: { since: number }): Promise<BatchOutcome> {
      const batchId = `b-${randomUUID()}`;
      return tracer.startActiveSpan("signing.batch", { attributes: { "keymesh.job_id": job.id, "keymesh.batch_id": batchId } }, jobCtx, async (span) => {
        const end = (outcome: BatchOutcome, error?: string) => {
          span.setAttribute("keymesh.outcome", outcome);
          if (error) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
          span.end();
          return outcome;
        };
        let lease;
        try {
          lease = (await deps.keys.acquireKeyLease({ holder: deps.executorId, ttlMs: job.leaseTtlMs, jobId: job.id }, { signal: stop.signal })).lease!;
        } catch (err) {
          const ce = ConnectError.from(err);
          if (ce.code === Code.ResourceExhausted) return end("busy");
          end("abandoned", `lease not acquired: ${ce.rawMessage}`);
          throw ce;
        }
        span.setAttributes({ "keymesh.key_id": lease.keyId, "keymesh.fence": Number(lease.fence) });
        leaseWait.record(now() - wait.since);
        leasesHeld.add(1);
        p.keysBusy++;
        p.batchesInFlight++;
        const startedAt = now();
        const lost = new AbortController();
        const renew = setInterval(() => {
          deps.keys
            .renewKeyLease({ keyId: lease.keyId, leaseId: lease.leaseId, fence: lease.fence, ttlMs: job.leaseTtlMs })
            .catch((err: unknown) => lost.abort(new Error(`lease lost: ${ConnectError.from(err).rawMessage}`)));
        }, Math.max(250, Math.floor(job.leaseTtlMs / 3)));
        let used = false;
        let claimId = "";
        try {
          const claim = await deps.collection.claimBatch({ claimant: deps.executorId, size: job.batchSize, claimTtlMs, jobId: job.id }, { signal: stop.signal });
          claimId = claim.claimId;
          if (claim.records.length === 0) return end("empty");
          span.setAttribute("keymesh.record_count", claim.records.length);
          const signed = await raceAbort(
            stream.sign({ batchId, keyId: lease.keyId, fence: lease.fence, items: claim.records.map((r) => ({ recordId: r.id, payload: r.payload })) }),
            lost.signal,
          );
          used = true;
          await failpoint("executor.before-commit");
          if (lost.signal.aborted) throw lost.signal.reason;
          const res = await deps.collection.commitBatch(
            { claimId, batchId, keyId: lease.keyId, fence: lease.fence, jobId: job.id, signatures: signed.signatures.map((s) => ({ recordId: s.recordId, signature: s.signature })), startedAtMs: BigInt(startedAt) },
            { headers },
          );
          claimId = "";
          p.signedByThisExecutor += res.stored;
          p.rejectedSignatures += res.rejected;
          span.setAttributes({ "keymesh.stored": res.stored, "keymesh.rejected": res.rejected });
          if (res.stored === 0) {
            const reason = res.rejections[0]?.reason ?? RejectionReason.UNSPECIFIED;
            p.batchesAbandoned++;
            return end("rejected", `commit rejected: ${RejectionReason[reason]}`);
          }
          p.batchesCommitted++;
          return end("committed");
        } catch (err) {
          p.batchesAbandoned++;
          const message = err instanceof Error ? err.message : String(err);
          span.recordException(err instanceof Error ? err : new Error(message));
          return end("abandoned", lost.signal.aborted ? String((lost.signal.reason as Error).message) : message);
        } finally {
          clearInterval(renew);
          leasesHeld.add(-1);
          p.keysBusy--;
          p.batchesInFlight--;
          if (claimId) await deps.collection.releaseClaim({ claimId }).catch(() => undefined);
          await deps.keys.releaseKeyLease({ keyId: lease.keyId, leaseId: lease.leaseId, fence: lease.fence, used }).catch(() => undefined);
        }
      });
    }

    async function worker(index: number) {
      let failures = 0;
      const wait = { since: now() };
      let outcome: BatchOutcome = "empty";
      await sleep(index * 5, stop.signal);
      while (!stop.signal.aborted) {
        if (outcome !== "busy") wait.since = now();
        try {
          outcome = await runBatch(wait);
        } catch (err) {
          outcome = "abandoned";
          deps.logger.warn({ job: job.id, err: ConnectError.from(err).rawMessage }, "batch failed before leasing");
        }
        if (outcome === "committed" || outcome === "rejected") failures = 0;
        if (outcome === "abandoned" && ++failures >= MAX_CONSECUTIVE_FAILURES) throw new Error("too many consecutive batch failures");
        if (outcome === "busy") await sleep(10 + Math.random() * 40, stop.signal);
        if (outcome === "abandoned") await sleep(Math.min(1000, 50 * failures), stop.signal);
        if (outcome === "empty") {
          const g = await refreshTotals().catch(() => undefined);
          if (g && g.signed >= g.total) return;
          await sleep(Math.min(200, job.leaseTtlMs / 4), stop.signal);
        }
      }
    }

    const workers = Promise.all(Array.from({ length: spec.concurrency }, (_, i) => worker(i)))
      .then(async () => {
        if (stop.signal.aborted) return;
        await refreshTotals();
        if (p.signedRecords >= p.totalRecords) {
          p.state = "succeeded";
          await deps.jobs.finish(job.id, "succeeded", now());
        }
      })
      .catch(async (err: unknown) => {
        p.state = "failed";
        p.error = err instanceof Error ? err.message : String(err);
        jobSpan.setStatus({ code: SpanStatusCode.ERROR, message: p.error });
        await deps.jobs.finish(job.id, "failed", now(), p.error).catch(() => undefined);
      })
      .finally(() => stop.abort());

    let lastSigned = 0;
    let lastAt = now();
    let lastTotals = 0;
    try {
      await refreshTotals().catch(() => undefined);
      while (!stop.signal.aborted) {
        yield snapshot();
        await sleep(spec.progressIntervalMs, stop.signal);
        if (now() - lastTotals >= TOTALS_REFRESH_MS) {
          lastTotals = now();
          await refreshTotals().catch(() => undefined);
        }
      }
      await workers;
      yield snapshot();
    } finally {
      stop.abort();
      signal.removeEventListener("abort", onAbort);
      await workers;
      stream.close();
      jobSpan.setAttributes({ "keymesh.signed": p.signedByThisExecutor, "keymesh.batches": p.batchesCommitted });
      jobsRunning.add(-1);
      jobProgress.remove({ job_id: job.id });
      jobSpan.end();
    }

    function snapshot(): Progress {
      const t = now();
      if (t - lastAt >= 1000) {
        p.recordsPerSecond = ((p.signedByThisExecutor - lastSigned) * 1000) / (t - lastAt);
        lastSigned = p.signedByThisExecutor;
        lastAt = t;
      } else if (p.recordsPerSecond === 0 && t > started) {
        p.recordsPerSecond = (p.signedByThisExecutor * 1000) / (t - started);
      }
      p.elapsedMs = t - started;
      if (p.totalRecords > 0) jobProgress.set(p.signedRecords / p.totalRecords, { job_id: job.id });
      return { ...p };
    }
  }

  return { run };
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
