import { randomUUID } from "node:crypto";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  ClaimBatchRequestSchema,
  CollectionService,
  CommitBatchRequestSchema,
  RejectionReason,
  ReleaseClaimRequestSchema,
  type ClaimBatchRequest,
  type ClaimStreamRequest,
  type ClaimStreamResponseSchema,
  type CommitBatchRequest,
  type ExportSignaturesResponseSchema,
  type ReleaseClaimRequest,
} from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { trace } from "@opentelemetry/api";
import { InvalidInputError, NotFoundError, mapErrors, toConnectError } from "../shared/errors.js";
import { assertValid } from "../shared/interceptors/validation.js";
import { boundedReplies } from "../shared/streams/bounded-replies.js";
import { answerInSpan } from "../shared/streams/request-span.js";
import { verifyEd25519Async } from "../shared/crypto/ed25519.js";
import { batchDuration, batchesCommitted, batchesRefused, fenceRejections, recordsSigned } from "../shared/telemetry/metrics-signing.js";
import { packRecords, unpackSignatures } from "../shared/records/blocks.js";
import type { LeaseCheck } from "./lease-check.js";
import type { CollectionStore, RejectReason, SignatureCheck, SignatureRow } from "./store.js";

/** Dependencies of the CollectionService handler. */
export interface CollectionHandlerDeps {
  readonly store: CollectionStore;
  /** Checks a commit's lease token and finds the key's public key (see lease-check.ts). */
  readonly leases: LeaseCheck;
  readonly now?: () => number;
}

const REASONS: Record<RejectReason, RejectionReason> = {
  already_signed: RejectionReason.ALREADY_SIGNED,
  stale_fence: RejectionReason.STALE_FENCE,
  not_in_claim: RejectionReason.NOT_IN_CLAIM,
  invalid_signature: RejectionReason.INVALID_SIGNATURE,
};

const EXPORT_PAGE = 2000;

/**
 * Requests one ClaimStream holds at once. A signing service has at most one request per batch
 * in flight (8 batches per executor stream); at the cap the stream stops reading and HTTP/2
 * flow control pushes back on the caller, so one caller cannot queue unbounded work here.
 */
export const CLAIM_STREAM_MAX_IN_FLIGHT = 64;

type ClaimStreamReply = MessageInitShape<typeof ClaimStreamResponseSchema>;

const tracer = trace.getTracer("keymesh.collection");

const storedSignature = (s: SignatureRow | undefined) =>
  s && { signature: s.signature, keyId: s.keyId, fence: BigInt(s.fence), batchId: s.batchId, signedAtMs: BigInt(s.signedAt) };

/**
 * Verifies the sampled signatures of a batch against the key's public key: a batch signed by
 * the wrong key, or with bad signatures among good ones, is refused whole. Verified on libuv's
 * thread pool, so the event loop keeps serving while a commit checks its sample.
 */
const sampleCheck: SignatureCheck = async (publicKey, payloads, sigs) =>
  (await Promise.all(sigs.map((s) => verifyEd25519Async(publicKey, payloads.get(s.recordId)!, s.signature)))).every(Boolean);

/**
 * CollectionService: records, claims and exactly-once signature commits. Requests arrive
 * checked against the rules in collection_service.proto (ranges, id lengths, 64-byte
 * signatures, int64 ids within 2^53-1 so that `Number()` below is exact; fences stay bigint).
 */
export function createCollectionHandler(deps: CollectionHandlerDeps): ServiceImpl<typeof CollectionService> {
  const now = deps.now ?? Date.now;
  const { store } = deps;

  async function claim(req: ClaimBatchRequest) {
    const claimId = randomUUID();
    const at = now();
    const expiresAt = at + req.claimTtlMs;
    const records = await store.claim({ claimId, claimant: req.claimant, jobId: req.jobId, size: req.size, now: at, expiresAt });
    return { claimId, records: packRecords(records), expiresAtMs: BigInt(expiresAt) };
  }

  async function commit(req: CommitBatchRequest, signal: AbortSignal) {
    // Uniqueness is the one rule left here: as a CEL rule over 10000 items it is too slow.
    const unpacked = unpackSignatures(req.signatures);
    if (unpacked.ids.length === 0) throw new InvalidInputError("signatures: a commit needs at least one signature");
    const seen = new Set<number>();
    const signatures = unpacked.ids.map((recordId, i) => {
      if (seen.has(recordId)) throw new InvalidInputError(`record ${recordId} appears twice in the commit`);
      seen.add(recordId);
      return { recordId, signature: unpacked.signatures[i]! };
    });
    // The lease token is checked locally; its expiry is judged inside the transaction.
    const lease = await deps.leases({ keyId: req.keyId, fence: req.fence, leaseId: req.leaseId, leaseToken: req.leaseToken }, signal);
    const result = lease.view
      ? await store.commit({ claimId: req.claimId, batchId: req.batchId, keyId: req.keyId, fence: req.fence, signatures }, now, lease.view, sampleCheck)
      : { stored: 0, rejections: signatures.map((s) => ({ recordId: s.recordId, reason: "stale_fence" as const })) };
    // Claim to decision, both on this service's clock (unknown for an unproven lease).
    recordCommitMetrics(result, result.startedAt !== undefined && result.decidedAt !== undefined ? result.decidedAt - result.startedAt : undefined);
    return {
      stored: result.stored,
      rejected: result.rejections.length,
      rejections: result.rejections.map((r) => ({ recordId: BigInt(r.recordId), reason: REASONS[r.reason] })),
    };
  }

  async function release(req: ReleaseClaimRequest) {
    return { released: await store.releaseClaim(req.claimId) };
  }

  /** One request on ClaimStream: its unary RPC's code, in a span of the request's own trace (the batch's). */
  function onClaimStream(msg: ClaimStreamRequest, signal: AbortSignal): Promise<ClaimStreamReply> {
    const { requestId } = msg;
    const r = msg.request;
    const answer = async (): Promise<ClaimStreamReply["response"]> => {
      switch (r.case) {
        case "claim":
          assertValid(ClaimBatchRequestSchema, r.value);
          return { case: "claim", value: await claim(r.value) };
        case "commit":
          assertValid(CommitBatchRequestSchema, r.value);
          return { case: "commit", value: await commit(r.value, signal) };
        case "release":
          assertValid(ReleaseClaimRequestSchema, r.value);
          return { case: "release", value: await release(r.value) };
        default:
          // The oneof is required: the server's validation refused such a message already.
          throw new InvalidInputError("request: a claim, commit or release is required");
      }
    };
    return answerInSpan(
      tracer,
      `collection.${r.case ?? "request"}`,
      {},
      msg,
      async () => ({ requestId, response: await answer() }),
      (failure) => ({ requestId, response: { case: "error", value: failure } }),
    );
  }

  return {
    seedRecords: mapErrors(async (req, ctx) => {
      const size = req.payloadSize === 0 ? 64 : req.payloadSize;
      const inserted = await store.seed(req.count, size, ctx.signal);
      const { total } = await store.progress(now());
      return { inserted, total: BigInt(total) };
    }),

    claimBatch: mapErrors(claim),
    commitBatch: mapErrors((req, ctx) => commit(req, ctx.signal)),
    releaseClaim: mapErrors(release),

    claimStream(requests, ctx) {
      // As the unary RPCs, one request at a time per slot, answered as each finishes.
      return boundedReplies(requests, CLAIM_STREAM_MAX_IN_FLIGHT, (msg) => onClaimStream(msg, ctx.signal));
    },

    getRecord: mapErrors(async (req) => {
      const found = await store.get(Number(req.id));
      if (!found) throw new NotFoundError(`record ${req.id} does not exist`);
      return { record: { id: BigInt(found.record.id), payload: found.record.payload }, signature: storedSignature(found.signature) };
    }),

    getProgress: mapErrors(async () => {
      const p = await store.progress(now());
      return { total: BigInt(p.total), signed: BigInt(p.signed), claimed: BigInt(p.claimed) };
    }),

    async *exportSignatures(req, ctx): AsyncGenerator<MessageInitShape<typeof ExportSignaturesResponseSchema>> {
      let after = Number(req.afterId);
      let left = req.limit > 0n ? Number(req.limit) : Number.POSITIVE_INFINITY;
      const page = (rows: Awaited<ReturnType<CollectionStore["export"]>>) => ({
        records: rows.map((r) => ({ record: { id: BigInt(r.record.id), payload: r.record.payload }, signature: storedSignature(r.signature) })),
      });
      try {
        if (req.jobId !== "") {
          // A job's records, batch by batch: one indexed read per batch, whatever the table's size.
          for (const batchId of await store.committedBatches(req.jobId)) {
            if (left <= 0 || ctx.signal.aborted) return;
            const rows = (await store.exportBatch(batchId)).slice(0, left);
            left -= rows.length;
            for (let i = 0; i < rows.length; i += EXPORT_PAGE) yield page(rows.slice(i, i + EXPORT_PAGE));
          }
          return;
        }
        while (left > 0 && !ctx.signal.aborted) {
          const rows = await store.export(after, Math.min(EXPORT_PAGE, left));
          if (rows.length === 0) return;
          after = rows[rows.length - 1]!.record.id;
          left -= rows.length;
          yield page(rows);
        }
      } catch (err) {
        throw toConnectError(err);
      }
    },

    getBatchStats: mapErrors(async (req) => {
      const s = await store.batchStats(req.jobId);
      const pct = (q: number) => BigInt(s.latenciesMs.length ? s.latenciesMs[Math.min(s.latenciesMs.length - 1, Math.floor(q * s.latenciesMs.length))]! : 0);
      return {
        batchesCommitted: BigInt(s.committed),
        batchesRejected: BigInt(s.rejected),
        keysUsed: s.batchesPerKey.length,
        minBatchesPerKey: BigInt(s.batchesPerKey.length ? Math.min(...s.batchesPerKey) : 0),
        maxBatchesPerKey: BigInt(s.batchesPerKey.length ? Math.max(...s.batchesPerKey) : 0),
        batchLatencyP50Ms: pct(0.5),
        batchLatencyP99Ms: pct(0.99),
        duplicateSignatures: BigInt(s.duplicates),
        batchSizes: s.sizes,
      };
    }),

    deleteRecords: mapErrors(async () => ({ deleted: BigInt(await store.deleteAll()) })),
  };
}

/** The domain metrics of one commit (services/shared/telemetry/metrics-signing.ts). */
function recordCommitMetrics(result: { stored: number; rejections: readonly { reason: RejectReason }[] }, latencyMs: number | undefined): void {
  const reason = result.rejections[0]?.reason;
  if (result.stored > 0) {
    recordsSigned.add(result.stored);
    batchesCommitted.add(1);
  } else {
    batchesRefused.add(1, { reason: reason ?? "unspecified" });
  }
  if (reason === "stale_fence") fenceRejections.add(1, { operation: "commit" });
  if (latencyMs !== undefined) batchDuration.record(latencyMs, { outcome: result.stored > 0 ? "committed" : "refused" });
}
