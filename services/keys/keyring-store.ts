import type { Knex } from "knex";
import type { Database } from "../shared/storage/database.js";

/** A keyring key as stored (the private key only ever in sealed form). */
export interface KeyringRow {
  readonly id: string;
  readonly publicKey: Buffer;
  readonly wrappedPrivateKey: Buffer;
  readonly masterKeyVersion: number;
  readonly fence: number;
  readonly lastUsedAt: number;
  readonly leasedUntil: number;
}

/** The result of granting a lease in the database. */
export interface Grant {
  readonly fence: number;
  readonly publicKey: Buffer;
  readonly previousLastUsedAt: number;
}

/** Persistence of the signing keyring and its lease state. */
export interface KeyringStore {
  insert(rows: readonly Omit<KeyringRow, "fence" | "lastUsedAt" | "leasedUntil">[], now: number): Promise<void>;
  list(afterId: string, limit: number): Promise<KeyringRow[]>;
  get(id: string): Promise<KeyringRow | undefined>;
  count(): Promise<number>;
  /** Free keys (lease expired or released), least recently used first. */
  freeCandidates(now: number, limit: number): Promise<{ id: string; lastUsedAt: number }[]>;
  /**
   * Takes a new fencing token and records the use, if the key is still free and unused since
   * it was listed (`lastUsedAt` unchanged), so the grant is least-recently-used at its moment.
   */
  grant(id: string, holder: string, now: number, ttlMs: number, lastUsedAt: number): Promise<Grant | undefined>;
  /** Extends a lease if `fence` is still current and the lease has not lapsed. */
  extend(id: string, fence: number, now: number, until: number): Promise<boolean>;
  /** Frees a lease if `fence` is still current; records the last use when `used`. */
  release(id: string, fence: number, now: number, used: boolean): Promise<boolean>;
  /** Stored private keys per master-key version. */
  countByMasterKeyVersion(): Promise<Map<number, number>>;
}

interface Row {
  id: string;
  public_key: Buffer;
  private_key_ciphertext: Buffer;
  master_key_version: number;
  fence: number | string;
  last_used_at: number | string;
  leased_until: number | string;
}

const toRow = (r: Row): KeyringRow => ({
  id: r.id,
  publicKey: Buffer.from(r.public_key),
  wrappedPrivateKey: Buffer.from(r.private_key_ciphertext),
  masterKeyVersion: Number(r.master_key_version),
  fence: Number(r.fence),
  lastUsedAt: Number(r.last_used_at),
  leasedUntil: Number(r.leased_until),
});

/** The knex implementation (MySQL/MariaDB and SQLite). */
export function createKeyringStore(db: Database): KeyringStore {
  const primary = db.primary;
  const keys = (k: Knex | Knex.Transaction = primary) => k("keyring_keys");

  return {
    async insert(rows, now) {
      await primary.batchInsert(
        "keyring_keys",
        rows.map((r) => ({
          id: r.id,
          algorithm: "ed25519",
          public_key: r.publicKey,
          private_key_ciphertext: r.wrappedPrivateKey,
          master_key_version: r.masterKeyVersion,
          fence: 0,
          last_used_at: 0,
          leased_until: 0,
          created_at: now,
        })),
        500,
      );
    },

    async list(afterId, limit) {
      const rows = await db.replica<Row>("keyring_keys").where("id", ">", afterId).orderBy("id").limit(limit);
      return rows.map(toRow);
    },

    async get(id) {
      const row = await keys().where({ id }).first();
      return row && toRow(row);
    },

    async count() {
      const [row] = await db.replica("keyring_keys").count({ n: "*" });
      return Number((row as { n: number | string }).n);
    },

    async freeCandidates(now, limit) {
      const rows = await keys()
        .select("id", "last_used_at")
        .where("leased_until", "<=", now)
        .orderBy([{ column: "last_used_at" }, { column: "id" }])
        .limit(limit);
      return rows.map((r) => ({ id: r.id, lastUsedAt: Number(r.last_used_at) }));
    },

    async grant(id, holder, now, ttlMs, lastUsedAt) {
      return primary.transaction(async (trx) => {
        const free = { id, last_used_at: lastUsedAt };
        const updated = await keys(trx)
          .where(free)
          .andWhere("leased_until", "<=", now)
          .update({ fence: trx.raw("fence + 1"), leased_until: now + ttlMs, holder, last_used_at: now });
        if (updated !== 1) return undefined;
        const row = await keys(trx).select("fence", "public_key").where({ id }).first();
        if (!row) return undefined;
        await trx("key_leases").insert({
          key_id: id,
          fence: row.fence,
          holder,
          acquired_at: now,
          previous_last_used_at: lastUsedAt,
          expires_at: now + ttlMs,
        });
        return { fence: Number(row.fence), publicKey: Buffer.from(row.public_key), previousLastUsedAt: lastUsedAt };
      });
    },

    // The key's row and its lease history change together or not at all: a connection lost
    // between two separate statements would leave a freed key whose history says still leased.
    async extend(id, fence, now, until) {
      return primary.transaction(async (trx) => {
        const n = await keys(trx).where({ id, fence }).andWhere("leased_until", ">", now).update({ leased_until: until });
        if (n === 1) await trx("key_leases").where({ key_id: id, fence }).update({ expires_at: until });
        return n === 1;
      });
    },

    async release(id, fence, now, used) {
      const patch: Record<string, unknown> = { leased_until: 0, holder: null };
      if (used) patch.last_used_at = now;
      return primary.transaction(async (trx) => {
        const n = await keys(trx).where({ id, fence }).update(patch);
        if (n === 1) await trx("key_leases").where({ key_id: id, fence }).update({ released_at: now });
        return n === 1;
      });
    },

    async countByMasterKeyVersion() {
      const rows = (await db.replica("keyring_keys").select("master_key_version").count({ n: "*" }).groupBy("master_key_version")) as {
        master_key_version: number;
        n: number | string;
      }[];
      return new Map(rows.map((r) => [Number(r.master_key_version), Number(r.n)]));
    },
  };
}
