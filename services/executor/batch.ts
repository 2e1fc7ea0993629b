import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { SpanStatusCode, trace, type Context, type Span, type SpanContext } from "@opentelemetry/api";
import type { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { RejectionReason } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import type { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import type { KeyLease } from "../../gen/keymesh/keys/v1/keys_pb.js";
import type { RecordBlock, SignatureBlock } from "../../gen/keymesh/records/v1/blocks_pb.js";
import { failpoint } from "../shared/failpoints.js";
import { untilAborted } from "../shared/until-aborted.js";
import { leasesHeld, leaseWait } from "../shared/telemetry/metrics-signing.js";
import type { JobRow } from "./job-store.js";
import type { ProgressTracker } from "./progress.js";
import type { SignStream } from "./sign-stream.js";

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
  readonly keys: Client<typeof KeyManagementService>;
  readonly collection: Client<typeof CollectionService>;
  readonly stream: SignStream;
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
 * lease, when there is one) and claim records, both at once; sign them on the shared stream;
 * commit under the lease's fence. A committed batch hands its lease on to the next; any
 * other outcome releases it. The lease is renewed while the batch runs; a failed renewal
 * abandons the batch (its claim released, nothing committed). Throws only when no lease
 * could be taken for a reason other than contention. `waitingSince`: when the worker began
 * waiting for a lease, busy retries included (the lease-wait metric).
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
    // The lease and the claim are independent: both are asked for at once.
    const [leased, claimed] = await Promise.allSettled([held ? rotateLease(ctx, held) : acquireLease(ctx), claimRecords(ctx)]);
    if (leased.status === "rejected") {
      if (claimed.status === "fulfilled" && (claimed.value.records?.ids.length ?? 0) > 0) {
        await ctx.collection.releaseClaim({ claimId: claimed.value.claimId }).catch(() => undefined);
      }
      const ce = ConnectError.from(leased.reason);
      if (ce.code === Code.ResourceExhausted) return end("busy");
      end("abandoned", `lease not acquired: ${ce.rawMessage}`);
      throw ce;
    }
    const lease = leased.value;
    span.setAttributes({ "keymesh.key_id": lease.keyId, "keymesh.fence": lease.fence.toString() });
    ctx.progress.batchStarted();
    leaseWait.record(ctx.now() - waitingSince);
    if (!held) leasesHeld.add(1);
    let kept: HeldLease | undefined;
    const renewal = startRenewal(ctx, lease);
    let used = false;
    let claimId = "";
    try {
      if (claimed.status === "rejected") throw claimed.reason;
      const claim = claimed.value;
      const count = claim.records?.ids.length ?? 0;
      if (!claim.records || count === 0) return end("empty");
      claimId = claim.claimId;
      span.setAttribute("keymesh.record_count", count);
      const signatures = await signRecords(ctx, batchId, lease, renewal.token(), claim.records, renewal.lost);
      used = true;
      await failpoint("executor.before-commit");
      if (renewal.lost.aborted) throw renewal.lost.reason;
      const res = await commit(ctx, { claimId, batchId, lease, leaseToken: renewal.token(), signatures });
      claimId = "";
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
        await release(ctx, lease, claimId, used);
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
  const { lease } = await ctx.keys.acquireKeyLease(
    { holder: ctx.executorId, ttlMs: ctx.job.leaseTtlMs, jobId: ctx.job.id },
    { signal: ctx.signal },
  );
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
    const { lease } = await ctx.keys.rotateKeyLease(
      { keyId: old.keyId, leaseId: old.leaseId, fence: old.fence, used, holder: ctx.executorId, ttlMs: ctx.job.leaseTtlMs, jobId: ctx.job.id },
      { signal: ctx.signal },
    );
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
 * Renews the lease every third of its TTL; `lost` aborts when a renewal fails, and `token`
 * is the lease token of the latest renewal (signing and collection refuse lapsed ones).
 */
function startRenewal(ctx: BatchContext, lease: KeyLease): { lost: AbortSignal; token(): string; stop(): void } {
  const lost = new AbortController();
  let token = lease.leaseToken;
  const timer = setInterval(() => {
    ctx.keys
      .renewKeyLease({ keyId: lease.keyId, leaseId: lease.leaseId, fence: lease.fence, ttlMs: ctx.job.leaseTtlMs })
      .then((res) => (token = res.leaseToken))
      .catch((err: unknown) => lost.abort(new Error(`lease lost: ${ConnectError.from(err).rawMessage}`)));
  }, Math.max(250, Math.floor(ctx.job.leaseTtlMs / 3)));
  return { lost: lost.signal, token: () => token, stop: () => clearInterval(timer) };
}

async function claimRecords(ctx: BatchContext) {
  // The claim lives as long as a lease: a crashed executor's records come back as fast as its key.
  return ctx.collection.claimBatch(
    { claimant: ctx.executorId, size: ctx.job.batchSize, claimTtlMs: ctx.job.leaseTtlMs, jobId: ctx.job.id },
    { signal: ctx.signal },
  );
}

/**
 * Signs the claimed records on the shared stream. The packed block goes on as it came from
 * collection, and the signatures come back packed: the executor never looks inside either.
 */
async function signRecords(ctx: BatchContext, batchId: string, lease: KeyLease, leaseToken: string, records: RecordBlock, lost: AbortSignal): Promise<SignatureBlock> {
  // The sealed key travels with the lease, so signing opens it instead of fetching it.
  const request = { batchId, keyId: lease.keyId, fence: lease.fence, leaseId: lease.leaseId, leaseToken, records, sealedPrivateKey: lease.sealedPrivateKey };
  const signed = await untilAborted(ctx.stream.sign(request), lost);
  if (!signed.signatures) throw new ConnectError("the signing service returned no signatures", Code.Internal);
  return signed.signatures;
}

async function commit(
  ctx: BatchContext,
  b: { claimId: string; batchId: string; lease: KeyLease; leaseToken: string; signatures: SignatureBlock },
) {
  return ctx.collection.commitBatch(
    {
      claimId: b.claimId,
      batchId: b.batchId,
      keyId: b.lease.keyId,
      fence: b.lease.fence,
      jobId: ctx.job.id,
      signatures: b.signatures,
      leaseId: b.lease.leaseId,
      leaseToken: b.leaseToken,
    },
    { headers: { "x-keymesh-executor": ctx.executorId } },
  );
}

/** Gives back what the batch still holds: its claim (if not committed) and its key. Never throws. */
async function release(ctx: BatchContext, lease: KeyLease, claimId: string, used: boolean): Promise<void> {
  if (claimId) await ctx.collection.releaseClaim({ claimId }).catch(() => undefined);
  await releaseLease(ctx, { lease, used });
}
