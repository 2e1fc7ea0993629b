import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { trace } from "@opentelemetry/api";
import {
  RunBatchRequestSchema,
  type RunBatchesRequest,
  type RunBatchesResponseSchema,
  type RunBatchRequest,
} from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { codeName } from "../shared/errors.js";
import { failpoint } from "../shared/failpoints.js";
import { assertValid } from "../shared/interceptors/validation.js";
import { packSignatures, unpackRecords } from "../shared/records/blocks.js";
import { untilAborted } from "../shared/until-aborted.js";
import { boundedReplies } from "../shared/streams/bounded-replies.js";
import { answerInSpan } from "../shared/streams/request-span.js";
import type { ClaimPort } from "./claim-stream.js";
import type { Signer } from "./signer.js";

type Reply = MessageInitShape<typeof RunBatchesResponseSchema>;

/** The RunBatches handler: the stream of requests, and the call's signal. */
export type RunBatches = (requests: AsyncIterable<RunBatchesRequest>, signal: AbortSignal) => AsyncIterable<Reply>;

/** Dependencies of RunBatches. */
export interface RunBatchesDeps {
  readonly signer: Pick<Signer, "signBatch">;
  /** CollectionService, where the records are claimed and the signatures committed (claim-stream.ts). */
  readonly collection: ClaimPort;
  /** Batches in flight per stream. */
  readonly maxInFlight: number;
}

/** A batch in flight on one stream: its latest lease token, and whether it was abandoned. */
interface InFlight {
  token: string;
  readonly abandoned: AbortController;
}

const tracer = trace.getTracer("keymesh.signing");

/**
 * RunBatches: the executor's data path. For each batch, claim its records from Collection,
 * sign them with the leased key, and commit the signatures under the lease: the payloads and
 * signatures go between Collection and this service once each, never through the executor.
 * The executor keeps the lease (it acquired it, renews it and gives it back) and decides what
 * runs; this service checks the lease token before signing, and Collection checks it again
 * in the commit's transaction, so a batch whose lease lapsed is refused whoever carries it.
 *
 * A batch abandoned by the executor (its lease was lost), or still in flight when the stream
 * ends (the executor is gone), commits nothing: its claim is released at once.
 */
export function createRunBatches(deps: RunBatchesDeps): RunBatches {
  const { collection, signer } = deps;

  async function run(req: RunBatchRequest, batch: InFlight, signal: AbortSignal): Promise<Reply["result"]> {
    assertValid(RunBatchRequestSchema, req);
    signal.throwIfAborted();
    const claim = await collection.claimBatch({ claimant: req.claimant, size: req.size, claimTtlMs: req.claimTtlMs, jobId: req.jobId });
    const ids = claim.records?.ids ?? [];
    if (ids.length === 0) return { case: "committed", value: { claimId: "", claimed: 0 } };
    trace.getActiveSpan()?.setAttribute("keymesh.record_count", ids.length);
    let committed = false;
    try {
      signal.throwIfAborted();
      const { payloads } = unpackRecords(claim.records);
      const lease = () => ({ keyId: req.keyId, fence: req.fence, leaseId: req.leaseId, leaseToken: batch.token });
      const signatures = await untilAborted(signer.signBatch(lease(), payloads, req.sealedPrivateKey), signal);
      await failpoint("signing.before-commit");
      signal.throwIfAborted();
      // Sent as one piece: a commit is not cancelled halfway (Collection decides it in one transaction).
      const commit = await collection.commitBatch({
        claimId: claim.claimId,
        batchId: req.batchId,
        keyId: req.keyId,
        fence: req.fence,
        jobId: req.jobId,
        leaseId: req.leaseId,
        leaseToken: batch.token,
        signatures: packSignatures(ids, signatures),
      });
      committed = true;
      return { case: "committed", value: { claimId: claim.claimId, claimed: ids.length, commit } };
    } finally {
      // Not committed: the records are claimable again at once, not when the claim expires.
      if (!committed) await collection.releaseClaim({ claimId: claim.claimId }).catch(() => undefined);
    }
  }

  return (requests, streamSignal) => {
    const inFlight = new Map<string, InFlight>();
    // The executor is gone (or the call ended): nothing in flight is committed.
    const streamEnded = () => new ConnectError("the stream ended before the batch was committed", Code.Canceled);
    const abandonAll = () => {
      for (const batch of inFlight.values()) batch.abandoned.abort(streamEnded());
    };
    streamSignal.addEventListener("abort", abandonAll, { once: true });

    /** One batch, in a span of the batch's own trace (its context travels in the message). */
    const runTraced = (msg: RunBatchesRequest, req: RunBatchRequest): Promise<Reply> => {
      const batchId = req.batchId;
      if (inFlight.has(batchId)) {
        return Promise.resolve({ batchId, result: { case: "error", value: { code: codeName(Code.InvalidArgument), message: `batch ${batchId} is already in flight on this stream` } } });
      }
      const batch: InFlight = { token: req.leaseToken, abandoned: new AbortController() };
      inFlight.set(batchId, batch);
      if (streamSignal.aborted) batch.abandoned.abort(streamEnded());
      const signal = batch.abandoned.signal;
      const attributes = { "keymesh.batch_id": batchId, "keymesh.key_id": req.keyId };
      return answerInSpan(
        tracer,
        "signing.run_batch",
        attributes,
        msg,
        async () => {
          try {
            return { batchId, result: await run(req, batch, signal) };
          } catch (err) {
            // Abandoned: the reason is the abandonment, whatever the step it interrupted threw.
            throw signal.aborted ? signal.reason : err;
          } finally {
            inFlight.delete(batchId);
          }
        },
        (failure) => ({ batchId, result: { case: "error", value: failure } }),
      );
    };

    const replies = boundedReplies(requests, deps.maxInFlight, (msg) => {
      const m = msg.message;
      switch (m.case) {
        case "batch":
          return runTraced(msg, m.value);
        case "renewal": {
          const batch = inFlight.get(m.value.batchId);
          if (batch) batch.token = m.value.leaseToken;
          return undefined;
        }
        case "abandon":
          inFlight.get(m.value)?.abandoned.abort(new ConnectError("the executor abandoned the batch: its lease was lost", Code.Aborted));
          return undefined;
        default:
          // The oneof is required: the server's validation refused the message already.
          return undefined;
      }
    });
    return (async function* () {
      try {
        yield* replies;
      } finally {
        streamSignal.removeEventListener("abort", abandonAll);
      }
    })();
  };
}
