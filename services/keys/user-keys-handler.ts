import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { KeyAlgorithm, KeyPairSchema, KeyPurpose, type KeyPair } from "../../gen/keymesh/keys/v1/keys_pb.js";
import { requireAuthenticated, requireServiceCaller, requireUser } from "../shared/caller.js";
import { InvalidInputError, mapErrors } from "../shared/errors.js";
import type { UserKeyPurpose, UserKeyRow } from "./user-key-store.js";
import type { UserKeys } from "./user-keys.js";

/** Server default and maximum page sizes for ListKeyPairs. */
const DEFAULT_PAGE = 50;
const MAX_PAGE = 500;

/** The public half of a key pair; the sealed private key never reaches a message. */
export const keyPairToProto = (row: UserKeyRow): KeyPair =>
  create(KeyPairSchema, {
    keyId: row.id,
    ownerId: row.ownerId,
    algorithm: row.algorithm === "x25519" ? KeyAlgorithm.X25519 : KeyAlgorithm.ED25519,
    purpose: row.purpose === "messaging" ? KeyPurpose.MESSAGING : KeyPurpose.SIGNING,
    publicKey: row.publicKey,
    messagingDefault: row.messagingDefault,
    masterKeyVersion: row.masterKeyVersion,
    createdAtMs: BigInt(row.createdAt),
  });

function purposeOf(p: KeyPurpose): UserKeyPurpose {
  if (p === KeyPurpose.MESSAGING) return "messaging";
  if (p === KeyPurpose.SIGNING) return "signing";
  throw new InvalidInputError("purpose must be KEY_PURPOSE_MESSAGING (X25519) or KEY_PURPOSE_SIGNING (Ed25519)");
}

/**
 * The user-key RPCs of KeyManagementService. Access: CreateKeyPair, ListKeyPairs,
 * SetMessagingKey and GetPublicKey are for users; OpenSealedBox for services only.
 */
export function createUserKeysHandler(keys: UserKeys): Partial<ServiceImpl<typeof KeyManagementService>> {
  return {
    createKeyPair: mapErrors(async (req, ctx) => {
      const user = requireUser(ctx);
      return { keyPair: keyPairToProto(await keys.create(user, purposeOf(req.purpose), req.makeMessagingDefault)) };
    }),

    listKeyPairs: mapErrors(async (req, ctx) => {
      const user = requireUser(ctx);
      const size = req.pageSize === 0 ? DEFAULT_PAGE : Math.min(req.pageSize, MAX_PAGE);
      const page = await keys.list(user.userId, req.pageToken, size);
      return { keyPairs: page.rows.map(keyPairToProto), nextPageToken: page.next };
    }),

    setMessagingKey: mapErrors(async (req, ctx) => {
      const user = requireUser(ctx);
      return { keyPair: keyPairToProto(await keys.setMessagingKey(user.userId, req.keyId)) };
    }),

    // Any authenticated caller: users look up whom they write to, the messages service the
    // recipient of a message it seals.
    getPublicKey: mapErrors(async (req, ctx) => {
      requireAuthenticated(ctx);
      const s = req.selector;
      if (s.case === "username") return { keyPair: keyPairToProto(await keys.messagingKeyOf(s.value)) };
      if (s.case === "keyId") return { keyPair: keyPairToProto(await keys.publicKeyById(s.value)) };
      throw new InvalidInputError("give a username or a key_id");
    }),

    openSealedBox: mapErrors(async (req, ctx) => {
      requireServiceCaller(ctx);
      const plaintext = await keys.openSealedBox({
        ownerId: req.ownerId,
        keyId: req.keyId,
        enc: req.encapsulatedKey,
        ciphertext: req.ciphertext,
        info: req.info,
        aad: req.associatedData,
      });
      return { plaintext };
    }),
  };
}
