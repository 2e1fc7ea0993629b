import type { Database } from "../shared/storage/database.js";

/** The algorithms and purposes of users' key pairs, as stored. */
export type UserKeyAlgorithm = "x25519" | "ed25519";
export type UserKeyPurpose = "messaging" | "signing";

/** A user's key pair as stored (the private key only ever in sealed form). */
export interface UserKeyRow {
  readonly id: string;
  readonly ownerId: string;
  readonly ownerUsername: string;
  readonly algorithm: UserKeyAlgorithm;
  readonly purpose: UserKeyPurpose;
  readonly publicKey: Buffer;
  readonly sealedPrivateKey: Buffer;
  readonly masterKeyVersion: number;
  readonly messagingDefault: boolean;
  readonly createdAt: number;
}

/**
 * Persistence of users' key pairs. Reads that serve read-only RPCs (list, public keys) go to
 * the replica; everything that decides a write, and the private key a box is opened with,
 * reads the primary.
 */
export interface UserKeyStore {
  insert(row: UserKeyRow): Promise<void>;
  /** The owner's key pairs with ids after `afterId`, in id (creation) order. */
  list(ownerId: string, afterId: string, limit: number): Promise<UserKeyRow[]>;
  /** One key pair by id; `fresh` reads the primary. */
  get(id: string, fresh?: boolean): Promise<UserKeyRow | undefined>;
  count(ownerId: string): Promise<number>;
  /** Makes `id` the owner's only messaging default; false when the owner has no such key. */
  setMessagingDefault(ownerId: string, id: string): Promise<boolean>;
  /** The current messaging key of a username. */
  messagingKeyOf(username: string): Promise<UserKeyRow | undefined>;
}

interface Row {
  id: string;
  owner_id: string;
  owner_username: string;
  algorithm: UserKeyAlgorithm;
  purpose: UserKeyPurpose;
  public_key: Uint8Array;
  private_key_ciphertext: Uint8Array;
  master_key_version: number | string;
  messaging_default: number | boolean;
  created_at: number | string;
}

export const USER_KEYS_TABLE = "user_key_pairs";

export const toUserKeyRow = (r: Row): UserKeyRow => ({
  id: r.id,
  ownerId: r.owner_id,
  ownerUsername: r.owner_username,
  algorithm: r.algorithm,
  purpose: r.purpose,
  publicKey: Buffer.from(r.public_key),
  sealedPrivateKey: Buffer.from(r.private_key_ciphertext),
  masterKeyVersion: Number(r.master_key_version),
  messagingDefault: Boolean(r.messaging_default),
  createdAt: Number(r.created_at),
});

/** The knex implementation (MySQL/MariaDB and SQLite). */
export function createUserKeyStore(db: Database): UserKeyStore {
  return {
    async insert(row) {
      await db.primary(USER_KEYS_TABLE).insert({
        id: row.id,
        owner_id: row.ownerId,
        owner_username: row.ownerUsername,
        algorithm: row.algorithm,
        purpose: row.purpose,
        public_key: row.publicKey,
        private_key_ciphertext: row.sealedPrivateKey,
        master_key_version: row.masterKeyVersion,
        messaging_default: row.messagingDefault,
        created_at: row.createdAt,
      });
    },

    async list(ownerId, afterId, limit) {
      const rows = (await db
        .replica(USER_KEYS_TABLE)
        .where("owner_id", ownerId)
        .andWhere("id", ">", afterId)
        .orderBy("id")
        .limit(limit)) as Row[];
      return rows.map(toUserKeyRow);
    },

    async get(id, fresh = false) {
      const row = (await (fresh ? db.primary : db.replica)(USER_KEYS_TABLE).where({ id }).first()) as Row | undefined;
      return row && toUserKeyRow(row);
    },

    async count(ownerId) {
      const [row] = await db.primary(USER_KEYS_TABLE).where("owner_id", ownerId).count({ n: "*" });
      return Number((row as { n: number | string }).n);
    },

    async setMessagingDefault(ownerId, id) {
      return db.primary.transaction(async (trx) => {
        const target = await trx(USER_KEYS_TABLE).where({ id, owner_id: ownerId, algorithm: "x25519" }).first("id");
        if (target === undefined) return false;
        await trx(USER_KEYS_TABLE).where({ owner_id: ownerId, messaging_default: true }).update({ messaging_default: false });
        await trx(USER_KEYS_TABLE).where({ id }).update({ messaging_default: true });
        return true;
      });
    },

    async messagingKeyOf(username) {
      const row = (await db
        .replica(USER_KEYS_TABLE)
        .where({ owner_username: username, messaging_default: true })
        .orderBy("id", "desc")
        .first()) as Row | undefined;
      return row && toUserKeyRow(row);
    },
  };
}
