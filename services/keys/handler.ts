import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { KeyringKeySchema, type KeyringKey } from "../../gen/keymesh/keys/v1/keys_pb.js";
import type { MasterKeyring } from "../shared/crypto/envelope.js";
import { mapErrors } from "../shared/errors.js";
import { withSpan } from "../shared/telemetry/interceptors.js";
import type { Keyring } from "./keyring.js";
import type { KeyringRow, KeyringStore } from "./keyring-store.js";

/** Dependencies of the KeyManagementService handler. */
export interface KeysHandlerDeps {
  readonly keyring: Keyring;
  readonly store: KeyringStore;
  readonly masterKeys: () => MasterKeyring;
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

/**
 * KeyManagementService: the signing keyring and its leases. Users' key pairs are in
 * user-keys-handler.ts, master-key rotation in rotation-handler.ts.
 * Requests arrive checked against key_management_service.proto's rules (counts, TTLs, key id
 * shape, fences positive and within 2^53-1, so `Number(req.fence)` is exact).
 */
export function createKeysHandler(deps: KeysHandlerDeps): Partial<ServiceImpl<typeof KeyManagementService>> {
  const { keyring, store } = deps;
  return {
    createKeyringKeys: mapErrors(async (req) => ({ keys: (await keyring.createKeys(req.count)).map(toProto) })),

    listKeyringKeys: mapErrors(async (req) => {
      const pageSize = req.pageSize === 0 ? 1000 : Math.min(req.pageSize, 10_000);
      const rows = await store.list(req.pageToken, pageSize);
      const next = rows.length === pageSize ? rows[rows.length - 1]!.id : "";
      return { keys: rows.map(toProto), nextPageToken: next };
    }),

    getKeyringKey: mapErrors(async (req) => ({ key: toProto(await keyring.get(req.keyId)) })),

    acquireKeyLease: mapErrors((req) =>
      withSpan("lease.acquire", { "keymesh.job_id": req.jobId, "keymesh.holder": req.holder }, async (span) => {
        const grant = await keyring.acquire(req.holder, req.ttlMs);
        span.setAttributes({ "keymesh.key_id": grant.keyId, "keymesh.fence": grant.fence });
        return {
          lease: {
            keyId: grant.keyId,
            fence: BigInt(grant.fence),
            leaseId: grant.leaseId,
            expiresAtMs: BigInt(grant.expiresAt),
            publicKey: grant.publicKey,
            previousLastUsedAtMs: BigInt(grant.previousLastUsedAt),
          },
        };
      }),
    ),

    renewKeyLease: mapErrors((req) =>
      withSpan("lease.renew", { "keymesh.key_id": req.keyId, "keymesh.fence": Number(req.fence) }, async () => ({
        expiresAtMs: BigInt(await keyring.renew(req.keyId, req.leaseId, Number(req.fence), req.ttlMs)),
      })),
    ),

    releaseKeyLease: mapErrors((req) =>
      withSpan("lease.release", { "keymesh.key_id": req.keyId, "keymesh.fence": Number(req.fence) }, async () => ({
        released: await keyring.release(req.keyId, req.leaseId, Number(req.fence), req.used),
      })),
    ),

    getWrappedSigningKey: mapErrors(async (req) => {
      const row = await keyring.wrappedKey(req.keyId, Number(req.fence));
      return { keyId: row.id, wrappedPrivateKey: row.wrappedPrivateKey, publicKey: row.publicKey, fence: BigInt(row.fence) };
    }),
  };
}
