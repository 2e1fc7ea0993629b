import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { SpanStatusCode, trace, type Context, type Span, type SpanContext } from "@opentelemetry/api";
import { RejectionReason } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import type { KeyLease } from "../../gen/keymesh/keys/v1/keys_pb.js";
import { failpoint } from "../shared/failpoints.js";
import { untilAborted } from "../shared/until-aborted.js";
import { leasesHeld, leaseWait } from "../shared/telemetry/metrics-signing.js";
import type { JobRow } from "./job-store.js";
import type { ProgressTracker } from "./progress.js";
import type { BatchStream } from "./batch-stream.js";
import type { LeasePort } from "./lease-stream.js";

/** How one batch ended; the job loop decides what to do next from it. */
export type BatchOutcome = "committed" | "rejected" | "abandoned" | "empty" | "busy";

/**
 * A lease a worker keeps from a committed batch for its next one: the next batch gives it
 * back and takes the next key in one call (RotateKeyLease) instead of a release and an
 * acquisition. The worker releases it when it stops.
 */
export interface HeldLease {
  readonly lease: KeyLease;
  readonly used: boolean;
}

/** What a batch reports to its worker. */
export interface BatchResult {
  readonly outcome: BatchOutcome;
  /** The lease to hand on to the next batch (set only after a commit). */
  readonly held?: HeldLease;
}

/** What one batch needs from its job. */
export interface BatchContext {
  /** The job's lease stream to the key service (lease-stream.ts). */
  readonly keys: LeasePort;
  readonly stream: BatchStream;
  readonly job: JobRow;
  readonly executorId: string;
  readonly progress: ProgressTracker;
  /** The job's context: each batch span is a root linked to the job's span. */
  readonly jobContext: Context;
  /** Told each batch span's context (the job span links to its batches). */
  readonly onBatchSpan?: (span: SpanContext) => void;
  /** Aborted when the job stops. */
  readonly signal: AbortSignal;
  readonly now: () => number;
}

const tracer = trace.getTracer("keymesh.executor");

/**
 * One batch: lease the least-recently-used key (rotating from `held`, the previous batch's
 * lease, when there is one), then have the signing service claim, sign and commit under that
 * lease on the shared stream: the records and signatures never pass through the executor. A
 * committed batch hands its lease on to the next; any other outcome releases it. The lease is
 * renewed while the batch runs and each renewed token is passed on; a failed renewal abandons
 * the batch (the signing service commits nothing and releases its claim). Throws only when no
 * lease could be taken for a reason other than contention. `waitingSince`: when the worker
 * began waiting for a lease, busy retries included (the lease-wait metric).
 */
export async function runBatch(ctx: BatchContext, waitingSince = ctx.now(), held?: HeldLease): Promise<BatchResult> {
  const batchId = `b-${randomUUID()}`;
  const attributes = { "keymesh.job_id": ctx.job.id, "keymesh.batch_id": batchId };
  // Each batch is its own trace: a root span linked to the job's span, so a job of a
  // million records is thousands of small traces Jaeger can show, not one of 60,000 spans.
  const job = trace.getSpanContext(ctx.jobContext);
  const options = { attributes, root: true, links: job ? [{ context: job }] : [] };
  return tracer.startActiveSpan("signing.batch", options, ctx.jobContext, async (span) => {
    if (job) ctx.onBatchSpan?.(span.spanContext());
    const end = (outcome: BatchOutcome, error?: string): BatchResult => ({ outcome: endSpan(span, outcome, error) });
    let lease: KeyLease;
    try {
      lease = held ? await rotateLease(ctx, held) : await acquireLease(ctx);
    } catch (err) {
      const ce = ConnectError.from(err);
      if (ce.code === Code.ResourceExhausted) return end("busy");
      end("abandoned", `lease not acquired: ${ce.rawMessage}`);
      throw ce;
    }
    span.setAttributes({ "keymesh.key_id": lease.keyId, "keymesh.fence": lease.fence.toString() });
    ctx.progress.batchStarted();
    leaseWait.record(ctx.now() - waitingSince);
    if (!held) leasesHeld.add(1);
    let kept: HeldLease | undefined;
    // Whether the key may have signed: unknown after a failure, so counted as used.
    let used = true;
    const renewal = startRenewal(ctx, lease, (token) => ctx.stream.renew(batchId, token));
    try {
      // A job stopped while the lease was on its way: the lease goes back, nothing is sent.
      ctx.signal.throwIfAborted();
      const { taken, done: ran } = ctx.stream.run({
        batchId,
        keyId: lease.keyId,
        fence: lease.fence,
        leaseId: lease.leaseId,
        leaseToken: lease.leaseToken,
        sealedPrivateKey: lease.sealedPrivateKey,
        claimant: ctx.executorId,
        jobId: ctx.job.id,
        size: ctx.job.batchSize,
        claimTtlMs: ctx.job.leaseTtlMs,
      });
      // A lost lease abandons the batch; its answer still comes (committed, if the commit was
      // already on its way, or refused), so that what this executor reports is what was stored.
      const onLost = () => ctx.stream.abandon(batchId);
      renewal.lost.addEventListener("abort", onLost, { once: true });
      if (renewal.lost.aborted) onLost();
      await taken;
      await failpoint("executor.batch-sent");
      const done = await untilAborted(ran, ctx.signal).finally(() => renewal.lost.removeEventListener("abort", onLost));
      if (done.claimed === 0) {
        used = false;
        return end("empty");
      }
      span.setAttribute("keymesh.record_count", done.claimed);
      const res = done.commit ?? { stored: 0, rejected: 0, rejections: [] };
      ctx.progress.committed(res.stored, res.rejected);
      span.setAttributes({ "keymesh.stored": res.stored, "keymesh.rejected": res.rejected });
      if (res.stored === 0) {
        const reason = res.rejections[0]?.reason ?? RejectionReason.UNSPECIFIED;
        return end("rejected", `commit rejected: ${RejectionReason[reason]}`);
      }
      if (!renewal.lost.aborted) kept = { lease, used };
      return { ...end("committed"), held: kept };
    } catch (err) {
      ctx.progress.abandoned();
      const error = err instanceof Error ? err : new Error(String(err));
      span.recordException(error);
      return end("abandoned", renewal.lost.aborted ? String((renewal.lost.reason as Error).message) : error.message);
    } finally {
      renewal.stop();
      ctx.progress.batchEnded();
      if (!kept) {
        leasesHeld.add(-1);
        await releaseLease(ctx, { lease, used });
      }
    }
  });
}

function endSpan(span: Span, outcome: BatchOutcome, error?: string): BatchOutcome {
  span.setAttribute("keymesh.outcome", outcome);
  if (error) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
  span.end();
  return outcome;
}

async function acquireLease(ctx: BatchContext): Promise<KeyLease> {
  const { lease } = await ctx.keys.acquireKeyLease({ holder: ctx.executorId, ttlMs: ctx.job.leaseTtlMs, jobId: ctx.job.id });
  if (!lease) throw new ConnectError("the key service granted no lease", Code.Internal);
  return lease;
}

/**
 * Gives back the previous batch's lease and takes the next key in one call. When no other key
 * is free (ResourceExhausted), the old lease was released all the same; on any other failure
 * it is released separately, best effort, as a lease nobody renews lapses anyway.
 */
async function rotateLease(ctx: BatchContext, held: HeldLease): Promise<KeyLease> {
  const { lease: old, used } = held;
  try {
    const { lease } = await ctx.keys.rotateKeyLease({
      keyId: old.keyId,
      leaseId: old.leaseId,
      fence: old.fence,
      used,
      holder: ctx.executorId,
      ttlMs: ctx.job.leaseTtlMs,
      jobId: ctx.job.id,
    });
    if (!lease) throw new ConnectError("the key service granted no lease", Code.Internal);
    return lease;
  } catch (err) {
    leasesHeld.add(-1);
    if (ConnectError.from(err).code !== Code.ResourceExhausted) await releaseLease(ctx, held);
    throw err;
  }
}

/** Gives back a lease kept from a committed batch (the worker stops). Never throws. */
export async function releaseLease(ctx: Pick<BatchContext, "keys">, held: HeldLease): Promise<void> {
  const { lease, used } = held;
  await ctx.keys.releaseKeyLease({ keyId: lease.keyId, leaseId: lease.leaseId, fence: lease.fence, used }).catch(() => undefined);
}

/**
 * Renews the lease every third of its TTL and hands each renewal's token to `renewed` (signing
 * and collection refuse lapsed ones); `lost` aborts when a renewal fails.
 */
function startRenewal(ctx: BatchContext, lease: KeyLease, renewed: (token: string) => void): { lost: AbortSignal; stop(): void } {
  const lost = new AbortController();
  const timer = setInterval(() => {
    ctx.keys
      .renewKeyLease({ keyId: lease.keyId, leaseId: lease.leaseId, fence: lease.fence, ttlMs: ctx.job.leaseTtlMs })
      .then((res) => renewed(res.leaseToken))
      .catch((err: unknown) => lost.abort(new Error(`lease lost: ${ConnectError.from(err).rawMessage}`)));
  }, Math.max(250, Math.floor(ctx.job.leaseTtlMs / 3)));
  return { lost: lost.signal, stop: () => clearInterval(timer) };
}




