import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { trace } from "@opentelemetry/api";
import {
  AcquireKeyLeaseRequestSchema,
  KeyManagementService,
  ReleaseKeyLeaseRequestSchema,
  RenewKeyLeaseRequestSchema,
  RotateKeyLeaseRequestSchema,
  RotateKeyLeaseResponseSchema,
  type LeaseStreamRequest,
  type LeaseStreamResponseSchema,
} from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { KeyringKeySchema, type KeyLeaseSchema, type KeyringKey } from "../../gen/keymesh/keys/v1/keys_pb.js";
import type { MasterKeyring } from "../shared/crypto/envelope.js";
import { audited, type AuditLog } from "../shared/audit/index.js";
import { ExhaustedError, InvalidInputError, mapErrors } from "../shared/errors.js";
import { assertValid } from "../shared/interceptors/validation.js";
import { boundedReplies } from "../shared/streams/bounded-replies.js";
import { answerInSpan } from "../shared/streams/request-span.js";
import { tracerName, withSpan } from "../shared/telemetry/interceptors.js";
import type { KeyLeaseGrant, Keyring } from "./keyring.js";
import type { KeyringRow, KeyringStore } from "./keyring-store.js";

/** Dependencies of the KeyManagementService handler. */
export interface KeysHandlerDeps {
  readonly keyring: Keyring;
  readonly store: KeyringStore;
  readonly masterKeys: () => MasterKeyring;
  /** Keyring creation and refused leases are recorded here (fail-closed). */
  readonly audit: AuditLog;
}

const toProto = (row: KeyringRow): KeyringKey =>
  create(KeyringKeySchema, {
    keyId: row.id,
    publicKey: row.publicKey,
    fence: BigInt(row.fence),
    lastUsedAtMs: BigInt(row.lastUsedAt),
    leasedUntilMs: BigInt(row.leasedUntil),
    masterKeyVersion: row.masterKeyVersion,
  });

type KeyLeaseInit = MessageInitShape<typeof KeyLeaseSchema>;
type Impl = ServiceImpl<typeof KeyManagementService>;
type LeaseStreamReply = MessageInitShape<typeof LeaseStreamResponseSchema>;

const tracer = trace.getTracer(tracerName);

/**
 * Requests one LeaseStream holds at once: an executor's workers each have at most a lease
 * request and a renewal in flight. At the cap the stream stops reading and HTTP/2 flow
 * control pushes back on the caller.
 */
export const LEASE_STREAM_MAX_IN_FLIGHT = 64;

/** The stream's handler context as the unary method `name` would see it (audit rows name the method). */
const as = (ctx: HandlerContext, name: keyof typeof KeyManagementService.method): HandlerContext =>
  Object.create(ctx, { method: { value: KeyManagementService.method[name] } }) as HandlerContext;

/** A granted lease on the wire (AcquireKeyLease and RotateKeyLease). */
const toLease = (grant: KeyLeaseGrant): KeyLeaseInit => ({
  keyId: grant.keyId,
  fence: grant.fence,
  leaseId: grant.leaseId,
  leaseToken: grant.leaseToken,
  expiresAtMs: BigInt(grant.expiresAt),
  publicKey: grant.publicKey,
  previousLastUsedAtMs: BigInt(grant.previousLastUsedAt),
  sealedPrivateKey: grant.sealedPrivateKey,
});

/**
 * KeyManagementService: the signing keyring and its leases. Users' key pairs are in
 * user-keys-handler.ts, master-key rotation in rotation-handler.ts. Requests arrive checked
 * against key_management_service.proto's rules (counts, TTLs, key id shape, fences positive;
 * int64 end to end, compared as bigint).
 */
export function createKeysHandler(deps: KeysHandlerDeps): Partial<ServiceImpl<typeof KeyManagementService>> {
  const { keyring, store } = deps;
  // A lease hands out a signing key: refusals are audited (grants are one per batch, the
  // signing records themselves account for them).
  const acquireKeyLease: Impl["acquireKeyLease"] = mapErrors((req, ctx) =>
    audited(deps.audit, ctx, (scope) => withSpan("lease.acquire", { "keymesh.job_id": req.jobId, "keymesh.holder": req.holder }, async (span) => {
      scope.object = { kind: "job", id: req.jobId };
      const grant = await keyring.acquire(req.holder, req.ttlMs);
      span.setAttributes({ "keymesh.key_id": grant.keyId, "keymesh.fence": grant.fence.toString() });
      return { lease: toLease(grant) };
    }), { failuresOnly: true }),
  );

  // Release and acquire in one call; like an acquisition, only refusals are audited.
  const rotateKeyLease: Impl["rotateKeyLease"] = mapErrors((req, ctx) =>
    audited(deps.audit, ctx, (scope) => withSpan("lease.rotate", { "keymesh.job_id": req.jobId, "keymesh.holder": req.holder, "keymesh.released_key_id": req.keyId }, async (span) => {
      scope.object = { kind: "job", id: req.jobId };
      const { released, grant } = await keyring.rotate(req.keyId, req.leaseId, req.fence, req.used, req.holder, req.ttlMs);
      span.setAttribute("keymesh.released", released);
      if (!grant) {
        const outcome = released ? `the lease on ${req.keyId} was released` : `nothing was released (that lease on ${req.keyId} was not current)`;
        throw new ExhaustedError(`${outcome}; every other keyring key is leased: retry with AcquireKeyLease shortly`, {
          details: [{ desc: RotateKeyLeaseResponseSchema, value: { released } }],
        });
      }
      span.setAttributes({ "keymesh.key_id": grant.keyId, "keymesh.fence": grant.fence.toString() });
      return { released, lease: toLease(grant) };
    }), { failuresOnly: true }),
  );

  const renewKeyLease: Impl["renewKeyLease"] = mapErrors((req) =>
    withSpan("lease.renew", { "keymesh.key_id": req.keyId, "keymesh.fence": req.fence.toString() }, async () => {
      const renewed = await keyring.renew(req.keyId, req.leaseId, req.fence, req.ttlMs);
      return { expiresAtMs: BigInt(renewed.expiresAt), leaseToken: renewed.leaseToken };
    }),
  );

  const releaseKeyLease: Impl["releaseKeyLease"] = mapErrors((req) =>
    withSpan("lease.release", { "keymesh.key_id": req.keyId, "keymesh.fence": req.fence.toString() }, async () => ({
      released: await keyring.release(req.keyId, req.leaseId, req.fence, req.used),
    })),
  );

  /** One request on LeaseStream: its unary RPC's code, in a span of the request's own trace (the batch's). */
  function onLeaseStream(msg: LeaseStreamRequest, ctx: HandlerContext): Promise<LeaseStreamReply> {
    const { requestId } = msg;
    const r = msg.request;
    const answer = async (): Promise<LeaseStreamReply["response"]> => {
      switch (r.case) {
        case "acquire":
          assertValid(AcquireKeyLeaseRequestSchema, r.value);
          return { case: "acquire", value: await acquireKeyLease(r.value, as(ctx, "acquireKeyLease")) };
        case "rotate":
          assertValid(RotateKeyLeaseRequestSchema, r.value);
          return { case: "rotate", value: await rotateKeyLease(r.value, as(ctx, "rotateKeyLease")) };
        case "renew":
          assertValid(RenewKeyLeaseRequestSchema, r.value);
          return { case: "renew", value: await renewKeyLease(r.value, as(ctx, "renewKeyLease")) };
        case "release":
          assertValid(ReleaseKeyLeaseRequestSchema, r.value);
          return { case: "release", value: await releaseKeyLease(r.value, as(ctx, "releaseKeyLease")) };
        default:
          // The oneof is required: the server's validation refused such a message already.
          throw new InvalidInputError("request: an acquire, rotate, renew or release is required");
      }
    };
    return answerInSpan(
      tracer,
      `lease.${r.case ?? "request"}`,
      {},
      msg,
      async () => ({ requestId, response: await answer() }),
      (failure) => ({ requestId, response: { case: "error", value: failure } }),
    );
  }

  return {
    createKeyringKeys: mapErrors((req, ctx) =>
      audited(deps.audit, ctx, async (scope) => {
        const keys = (await keyring.createKeys(req.count)).map(toProto);
        scope.version = deps.masterKeys().primaryVersion;
        return { keys };
      }),
    ),

    listKeyringKeys: mapErrors(async (req) => {
      const pageSize = req.pageSize === 0 ? 1000 : Math.min(req.pageSize, 10_000);
      const rows = await store.list(req.pageToken, pageSize);
      const next = rows.length === pageSize ? rows[rows.length - 1]!.id : "";
      return { keys: rows.map(toProto), nextPageToken: next };
    }),

    getKeyringKey: mapErrors(async (req) => ({ key: toProto(await keyring.get(req.keyId)) })),

    acquireKeyLease,
    rotateKeyLease,
    renewKeyLease,
    releaseKeyLease,

    leaseStream(requests, ctx) {
      return boundedReplies(requests, LEASE_STREAM_MAX_IN_FLIGHT, (msg) => onLeaseStream(msg, ctx));
    },

    getWrappedSigningKey: mapErrors(async (req) => {
      const row = await keyring.wrappedKey(req.keyId, req.leaseId, req.fence);
      return { keyId: row.id, wrappedPrivateKey: row.wrappedPrivateKey, publicKey: row.publicKey, fence: BigInt(row.fence) };
    }),
  };
}
