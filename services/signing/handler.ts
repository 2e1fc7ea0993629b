import type { KeyObject } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { trace } from "@opentelemetry/api";
import {
  SignBatchRequestSchema,
  SigningService,
  type SignBatchRequest,
  type SignStreamRequest,
  type SignStreamResponseSchema,
} from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { ed25519PublicKey, verifyEd25519 } from "../shared/crypto/ed25519.js";
import { InvalidInputError, mapErrors } from "../shared/errors.js";
import { assertValid } from "../shared/interceptors/validation.js";
import { packSignatures, unpackRecords } from "../shared/records/blocks.js";
import { boundedReplies } from "../shared/streams/bounded-replies.js";
import { answerInSpan } from "../shared/streams/request-span.js";
import type { RunBatches } from "./run-batches.js";
import type { Signer } from "./signer.js";

type StreamReply = MessageInitShape<typeof SignStreamResponseSchema>;

/** Dependencies of the SigningService handler. */
export interface SigningHandlerDeps {
  readonly signer: Pick<Signer, "signBatch">;
  /** Batches in flight per stream (default STREAM_MAX_IN_FLIGHT). */
  readonly streamMaxInFlight?: number;
  /** The raw public key of a keyring key (from the key service). */
  readonly publicKeyOf: (keyId: string) => Promise<Uint8Array>;
  /** RunBatches: claim, sign and commit (see run-batches.ts). */
  readonly runBatches: RunBatches;
}

const tracer = trace.getTracer("keymesh.signing");
/**
 * Batches one SignStream or RunBatches stream holds at once, counted from the moment a message
 * is read until its reply is taken by the transport. At the cap the stream stops reading, so
 * HTTP/2 flow control pushes back on the sender instead of requests and replies piling up
 * here (bounded-stream.ts).
 */
export const STREAM_MAX_IN_FLIGHT = 8;

/**
 * SigningService: the only place a keyring private key is decrypted and used. Requests arrive
 * checked against signing_service.proto's rules (batch and payload sizes, key ids, 32-byte
 * public keys, 64-byte signatures, fences positive int64); only batches on the stream are
 * checked here, one by one.
 */
export function createSigningHandler(deps: SigningHandlerDeps): ServiceImpl<typeof SigningService> {
  const publicKeys = new Map<string, Promise<KeyObject>>();
  const publicKey = (keyId: string) => {
    let key = publicKeys.get(keyId);
    if (!key) {
      key = deps.publicKeyOf(keyId).then(ed25519PublicKey);
      key.catch(() => publicKeys.delete(keyId));
      publicKeys.set(keyId, key);
    }
    return key;
  };

  const signBatch = async (req: SignBatchRequest) => {
    const lease = { keyId: req.keyId, fence: req.fence, leaseId: req.leaseId, leaseToken: req.leaseToken };
    const records = unpackRecords(req.records);
    if (records.ids.length === 0) throw new InvalidInputError("records: a batch needs at least one record");
    const signatures = await deps.signer.signBatch(lease, records.payloads, req.sealedPrivateKey);
    return { batchId: req.batchId, keyId: req.keyId, signatures: packSignatures(req.records!.ids, signatures) };
  };

  /** One batch on the stream, in a span parented by the batch's own trace context. */
  const signOnStream = (msg: SignStreamRequest): Promise<StreamReply> => {
    const batch = msg.batch;
    const batchId = batch?.batchId ?? "";
    const attributes = { "keymesh.batch_id": batchId, "keymesh.key_id": batch?.keyId ?? "", "keymesh.record_count": batch?.records?.ids.length ?? 0 };
    return answerInSpan<StreamReply>(
      tracer,
      "signing.sign_batch",
      attributes,
      msg,
      async () => {
        if (!batch) throw new InvalidInputError("each stream message carries a batch");
        assertValid(SignBatchRequestSchema, batch);
        return { batchId, result: { case: "signed", value: await signBatch(batch) } };
      },
      (failure) => ({ batchId, result: { case: "error", value: failure } }),
    );
  };

  return {
    signBatch: mapErrors(signBatch),

    signStream(requests) {
      // Batches are signed as they arrive and answered as they finish, so a slow key fetch
      // for one batch does not hold up the others.
      return boundedReplies(requests, deps.streamMaxInFlight ?? STREAM_MAX_IN_FLIGHT, signOnStream);
    },

    runBatches: (requests, ctx) => deps.runBatches(requests, ctx.signal),

    verify: mapErrors(async (req) => {
      // The `key` oneof is required by the proto: one of the two cases is set.
      const key = req.key.case === "keyId" ? await publicKey(req.key.value) : ed25519PublicKey(req.key.value!);
      return { valid: verifyEd25519(key, req.payload, req.signature) };
    }),

    verifyBatch: mapErrors(async (req) => {
      const invalid: bigint[] = [];
      for (const item of req.items) {
        if (!verifyEd25519(await publicKey(item.keyId), item.payload, item.signature)) invalid.push(item.recordId);
      }
      return { valid: req.items.length - invalid.length, invalidRecordIds: invalid };
    }),
  };
}
