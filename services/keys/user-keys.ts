import { Code } from "@connectrpc/connect";
import { generateKeyPairSync } from "node:crypto";
import { open, seal, type MasterKeyring, type SealContext } from "../shared/crypto/envelope.js";
import { HpkeOpenError, openBase, rawX25519 } from "../shared/crypto/hpke.js";
import { rawEd25519PublicKey } from "../shared/crypto/ed25519.js";
import { DomainError, InvalidInputError, NotFoundError } from "../shared/errors.js";
import { isUuid, uuidv7 } from "../shared/ids.js";
import type { UserKeyPurpose, UserKeyRow, UserKeyStore } from "./user-key-store.js";

/**
 * Users' key pairs: X25519 for receiving messages, Ed25519 for signing their own data.
 * Private keys are generated here, sealed under the primary master key at once and never
 * leave this service; the only thing done with a messaging private key is opening an HPKE
 * box addressed to it (`openSealedBox`), for the messages service on the recipient's behalf.
 */

/** The AEAD of keymesh's HPKE suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM. */
export const MESSAGE_AEAD = "aes-256-gcm" as const;

/** At most this many key pairs per user: creating keys is cheap, storing them is not free. */
export const MAX_KEY_PAIRS_PER_USER = 100;

/** Where a user's private key is sealed, for the envelope's associated data. */
export const userKeySealContext = (id: string): SealContext => ({ table: "user_key_pairs", column: "private_key", id });

/** The calling user, as the keys service needs them. */
export interface KeyOwner {
  readonly userId: string;
  readonly username: string;
}

/** A sealed box to open, as the messages service hands it over. */
export interface BoxToOpen {
  readonly ownerId: string;
  readonly keyId: string;
  readonly enc: Uint8Array;
  readonly ciphertext: Uint8Array;
  readonly info: Uint8Array;
  readonly aad: Uint8Array;
}

export interface UserKeys {
  create(owner: KeyOwner, purpose: UserKeyPurpose, makeDefault: boolean): Promise<UserKeyRow>;
  list(ownerId: string, pageToken: string, pageSize: number): Promise<{ rows: UserKeyRow[]; next: string }>;
  setMessagingKey(ownerId: string, keyId: string): Promise<UserKeyRow>;
  publicKeyById(keyId: string): Promise<UserKeyRow>;
  messagingKeyOf(username: string): Promise<UserKeyRow>;
  openSealedBox(box: BoxToOpen): Promise<Buffer>;
}

export interface UserKeysDeps {
  readonly store: UserKeyStore;
  readonly ring: () => MasterKeyring;
  readonly now?: () => number;
}

function newKeyPair(purpose: UserKeyPurpose): { publicKey: Buffer; privateKey: Buffer } {
  if (purpose === "messaging") {
    const kp = generateKeyPairSync("x25519");
    return { publicKey: rawX25519(kp.publicKey), privateKey: rawX25519(kp.privateKey) };
  }
  const kp = generateKeyPairSync("ed25519");
  // The 32-byte seed (the last bytes of the PKCS#8 encoding) is the whole private key.
  const seed = Buffer.from(kp.privateKey.export({ format: "der", type: "pkcs8" }).subarray(-32));
  return { publicKey: rawEd25519PublicKey(kp.publicKey), privateKey: seed };
}

const keyIdOf = (keyId: string): string => {
  if (!isUuid(keyId)) throw new InvalidInputError("key_id must be a key pair id (a lowercase UUID)");
  return keyId;
};

export function createUserKeys(deps: UserKeysDeps): UserKeys {
  const { store } = deps;
  const now = deps.now ?? Date.now;

  return {
    async create(owner, purpose, makeDefault) {
      if (makeDefault && purpose !== "messaging") throw new InvalidInputError("only a messaging key can be the messaging default");
      if ((await store.count(owner.userId)) >= MAX_KEY_PAIRS_PER_USER) {
        throw new DomainError(Code.ResourceExhausted, `a user holds at most ${MAX_KEY_PAIRS_PER_USER} key pairs`);
      }
      const t = now();
      const id = uuidv7(t);
      const ring = deps.ring();
      const { publicKey, privateKey } = newKeyPair(purpose);
      const sealed = seal(ring, privateKey, userKeySealContext(id));
      privateKey.fill(0);
      const row: UserKeyRow = {
        id,
        ownerId: owner.userId,
        ownerUsername: owner.username,
        algorithm: purpose === "messaging" ? "x25519" : "ed25519",
        purpose,
        publicKey,
        sealedPrivateKey: sealed,
        masterKeyVersion: ring.primaryVersion,
        messagingDefault: false,
        createdAt: t,
      };
      await store.insert(row);
      if (purpose !== "messaging") return row;
      // A user's first messaging key becomes their default without being asked.
      const current = makeDefault ? undefined : await store.messagingKeyOf(owner.username);
      if (current !== undefined && current.ownerId === owner.userId) return row;
      await store.setMessagingDefault(owner.userId, id);
      return { ...row, messagingDefault: true };
    },

    async list(ownerId, pageToken, pageSize) {
      if (pageToken !== "") keyIdOf(pageToken);
      const rows = await store.list(ownerId, pageToken, pageSize);
      return { rows, next: rows.length === pageSize ? rows[rows.length - 1]!.id : "" };
    },

    async setMessagingKey(ownerId, keyId) {
      const row = await store.get(keyIdOf(keyId), true);
      // Another user's key is reported exactly like a key that does not exist.
      if (row === undefined || row.ownerId !== ownerId) throw new NotFoundError(`no key pair ${keyId} of yours`);
      if (row.algorithm !== "x25519") throw new InvalidInputError(`key pair ${keyId} is a signing key; messages need an X25519 (messaging) key`);
      if (!(await store.setMessagingDefault(ownerId, row.id))) throw new NotFoundError(`no key pair ${keyId} of yours`);
      return { ...row, messagingDefault: true };
    },

    async publicKeyById(keyId) {
      const row = await store.get(keyIdOf(keyId));
      if (row === undefined) throw new NotFoundError(`no key pair ${keyId}`);
      return row;
    },

    async messagingKeyOf(username) {
      if (username === "") throw new InvalidInputError("username is empty");
      const row = await store.messagingKeyOf(username);
      if (row === undefined) {
        throw new NotFoundError(`no messaging key for user "${username}" (no such user, or they have not created a key yet)`);
      }
      return row;
    },

    async openSealedBox(box) {
      const row = await store.get(keyIdOf(box.keyId), true);
      if (row === undefined || row.ownerId !== box.ownerId) throw new NotFoundError(`no key pair ${box.keyId} for that user`);
      if (row.algorithm !== "x25519") throw new InvalidInputError(`key pair ${box.keyId} is not an X25519 key`);
      const privateKey = open(deps.ring(), row.sealedPrivateKey, userKeySealContext(row.id));
      try {
        return openBase(MESSAGE_AEAD, privateKey, box.info, box.aad, { enc: Buffer.from(box.enc), ciphertext: Buffer.from(box.ciphertext) });
      } catch (err) {
        if (err instanceof HpkeOpenError) throw new DomainError(Code.DataLoss, "the sealed box does not open: it was altered or belongs to another message");
        throw err;
      } finally {
        privateKey.fill(0);
      }
    },
  };
}
