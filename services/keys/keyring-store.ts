import type { Knex } from "knex";
import type { Database } from "../shared/storage/database.js";
import { withHeldConnection } from "../shared/storage/prepared.js";

/** A keyring key as stored (the private key only ever in sealed form). */
export interface KeyringRow {
  readonly id: string;
  readonly publicKey: Buffer;
  readonly wrappedPrivateKey: Buffer;
  readonly masterKeyVersion: number;
  readonly fence: number;
  readonly lastUsedAt: number;
  readonly leasedUntil: number;
  /** SHA-256 of the current (or last) lease id; undefined before the first lease. */
  readonly leaseHash?: Buffer | undefined;
}

/** A free key as the grant transaction locked it: what the grant needs to know about it. */
export interface FreeKey {
  readonly id: string;
  readonly fence: number;
  readonly lastUsedAt: number;
  /** 0 when its last lease was released; an expiry in the past when that lease lapsed. */
  readonly leasedUntil: number;
  readonly publicKey: Buffer;
  /** The sealed private key, handed to the lease holder with the lease. */
  readonly wrappedPrivateKey: Buffer;
}

/** The lease writes of one grant transaction on SQLite, statement by statement. */
interface LeaseWrites {
  /**
   * The least-recently-used released key not in `exclude` (or, when none is free, the key
   * whose lease lapsed longest before `now`).
   */
  nextFree(now: number, exclude: readonly string[]): Promise<FreeKey | undefined>;
  /**
   * Leases a key `nextFree` returned in this transaction: its fence becomes `key.fence + 1`,
   * its last use `now`, and its lease the one hashed to `leaseHash`; a lease history row is
   * written, and an earlier lease that was never released is marked lapsed. Returns the new fence.
   */
  grant(key: FreeKey, holder: string, now: number, ttlMs: number, leaseHash: Buffer): Promise<number>;
}

/** A lease a grant wrote, not yet committed. */
export interface PendingGrant {
  /** The key as it was before this grant. */
  readonly key: FreeKey;
  /** The lease's fence (the key's previous fence plus one). */
  readonly fence: number;
  /**
   * When it was granted (its last use and the start of its TTL): the clock once the grant had
   * its connection, or the end of the key's previous lease if that is later.
   */
  readonly at: number;
}

/** What a grant asks for (see KeyringStore.grant). */
export interface GrantRequest {
  readonly holder: string;
  readonly ttlMs: number;
  readonly leaseHash: Buffer;
  /** Keys not to grant (the one a rotation just released, keys whose lock was refused). */
  readonly exclude: readonly string[];
  /** Read once the grant has its connection, to date it (see PendingGrant.at). */
  readonly clock: () => number;
}

/** Persistence of the signing keyring and its lease state. */
export interface KeyringStore {
  insert(rows: readonly Omit<KeyringRow, "fence" | "lastUsedAt" | "leasedUntil" | "leaseHash">[], now: number): Promise<void>;
  list(afterId: string, limit: number): Promise<KeyringRow[]>;
  get(id: string): Promise<KeyringRow | undefined>;
  count(): Promise<number>;
  /**
   * Grants a lease in one transaction: locks the least-recently-used released key not in
   * `exclude` (on MySQL/MariaDB with FOR UPDATE SKIP LOCKED, so concurrent grants are handed
   * different keys; on SQLite the transaction serializes them) or, when none is released, the
   * key whose lease lapsed longest ago, and writes the new lease (fence + 1, last use, lease
   * hash, history row; an earlier lease never released is marked lapsed). Then, with the
   * transaction still open and the key's row locked, `keep` decides: true commits, false rolls
   * back (nothing of the grant remains). The key's row and its history change together or not
   * at all. Undefined when no key is free, or `keep` said no.
   *
   * On MySQL/MariaDB the stored procedure keymesh_open_key_grant (migration keys/0008) opens the
   * transaction and makes its writes in one round trip (then COMMIT or ROLLBACK), where SQLite
   * runs BEGIN, three or four statements and COMMIT.
   */
  grant(request: GrantRequest, keep: (pending: PendingGrant) => Promise<boolean>): Promise<PendingGrant | undefined>;
  /**
   * Frees the key's lease if `leaseHash` and `fence` name its current, unreleased lease (the
   * hash is compared in SQL) and records the last use when `used`; false when nothing changed.
   * Atomic (one statement on MySQL/MariaDB), dated by `clock` once a connection is in hand: a
   * release still queued for a connection is not in effect, and dated earlier it would look,
   * to the LRU replay, like a free key passed over.
   */
  release(id: string, leaseHash: Buffer, fence: number, clock: () => number, used: boolean): Promise<boolean>;
  /** Extends a lease if `fence` is still current and the lease has not lapsed. */
  extend(id: string, fence: number, now: number, until: number): Promise<boolean>;
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
  lease_hash?: Buffer | null;
}

const toRow = (r: Row): KeyringRow => ({
  id: r.id,
  publicKey: Buffer.from(r.public_key),
  wrappedPrivateKey: Buffer.from(r.private_key_ciphertext),
  masterKeyVersion: Number(r.master_key_version),
  fence: Number(r.fence),
  lastUsedAt: Number(r.last_used_at),
  leasedUntil: Number(r.leased_until),
  leaseHash: r.lease_hash ? Buffer.from(r.lease_hash) : undefined,
});

type FreeRow = Pick<Row, "id" | "fence" | "last_used_at" | "leased_until" | "public_key" | "private_key_ciphertext">;

const toFree = (r: FreeRow): FreeKey => ({
  id: r.id,
  fence: Number(r.fence),
  lastUsedAt: Number(r.last_used_at),
  leasedUntil: Number(r.leased_until),
  publicKey: Buffer.from(r.public_key),
  wrappedPrivateKey: Buffer.from(r.private_key_ciphertext),
});

/** Rolls back a SQLite grant that `keep` did not keep. */
const NOT_KEPT = new Error("grant not kept");

/** The knex implementation (MySQL/MariaDB and SQLite). */
export function createKeyringStore(db: Database): KeyringStore {
  const primary = db.primary;
  const keys = (k: Knex | Knex.Transaction = primary) => k("keyring_keys");
  const mysql = db.dialect === "mysql";

  /**
   * Frees the lease named by (id, fence, lease hash) if it is unreleased, on SQLite: two
   * statements, which the caller runs in a transaction (MySQL/MariaDB: one multi-table UPDATE,
   * in `release` below). The lease hash stays on the row: a late renewal of this lease still
   * fails on leased_until, a second release too.
   */
  async function releaseSqlite(k: Knex.Transaction, id: string, leaseHash: Buffer, fence: number, now: number, used: boolean): Promise<boolean> {
    const patch: Record<string, unknown> = { leased_until: 0, holder: null };
    if (used) patch.last_used_at = now;
    const n = await keys(k).where({ id, fence, lease_hash: leaseHash }).andWhere("leased_until", ">", 0).update(patch);
    if (n === 1) await k("key_leases").where({ key_id: id, fence }).update({ released_at: now });
    return n === 1;
  }

  /**
   * The grant's statements on SQLite, where the transaction itself serializes grants (MySQL/
   * MariaDB run the same in keymesh_open_key_grant, with the locking its concurrency needs).
   */
  const leaseWrites = (trx: Knex.Transaction): LeaseWrites => ({
    async nextFree(now, exclude) {
      const pick = (free: (q: Knex.QueryBuilder) => Knex.QueryBuilder) => {
        let query = free(keys(trx).first("id", "fence", "last_used_at", "leased_until", "public_key", "private_key_ciphertext"));
        if (exclude.length > 0) query = query.whereNotIn("id", exclude);
        return query as Promise<FreeRow | undefined>;
      };
      // Released keys first, least recently used; none: the key whose lease lapsed (expired
      // unreleased) longest ago.
      const row =
        (await pick((q) => q.where("leased_until", 0).orderBy([{ column: "last_used_at" }, { column: "id" }]))) ??
        (await pick((q) => q.where("leased_until", ">", 0).andWhere("leased_until", "<=", now).orderBy("leased_until")));
      return row && toFree(row);
    },

    async grant(key, holder, now, ttlMs, leaseHash) {
      const fence = key.fence + 1;
      // The row is locked by this transaction; the fence condition is a cheap guard that the
      // fence moves by exactly one per grant even if that ever stopped being true.
      const n = await keys(trx)
        .where({ id: key.id, fence: key.fence })
        .update({ fence, leased_until: now + ttlMs, holder, last_used_at: now, lease_hash: leaseHash });
      if (n !== 1) throw new Error(`keyring key ${key.id} changed under its row lock`);
      // Still leased_until > 0: the previous lease was never released, so it lapsed at its
      // last expiry. Say so instead of leaving it open for ever.
      if (key.leasedUntil > 0) {
        await trx("key_leases")
          .where({ key_id: key.id })
          .whereNull("released_at")
          .whereNull("lapsed_at")
          .andWhere("fence", "<", fence)
          .update({ lapsed_at: trx.ref("expires_at") });
      }
      await trx("key_leases").insert({
        lease_hash: leaseHash,
        key_id: key.id,
        fence,
        holder,
        acquired_at: now,
        previous_last_used_at: key.lastUsedAt,
        expires_at: now + ttlMs,
      });
      return fence;
    },
  });

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

    async release(id, leaseHash, fence, clock, used) {
      if (!mysql) return primary.transaction((trx) => releaseSqlite(trx, id, leaseHash, fence, clock(), used));
      // One multi-table UPDATE frees the key and closes its history row: atomic without a
      // transaction, one round trip, prepared. The LEFT JOIN also fixes the lock order, key row
      // first, as in a grant. Dated once its connection is in hand.
      return withHeldConnection(primary, async (conn) => {
        const now = clock();
        const lastUse = used ? ", k.last_used_at = ?" : "";
        const sql =
          "UPDATE keyring_keys k LEFT JOIN key_leases l ON l.key_id = k.id AND l.fence = k.fence " +
          `SET k.leased_until = 0, k.holder = NULL, l.released_at = ?${lastUse} ` +
          "WHERE k.id = ? AND k.fence = ? AND k.lease_hash = ? AND k.leased_until > 0";
        const { affectedRows } = await conn.run(sql, used ? [now, now, id, fence, leaseHash] : [now, id, fence, leaseHash]);
        return affectedRows > 0;
      });
    },

    async grant(request, keep) {
      if (mysql) {
        return withHeldConnection(primary, async (conn) => {
          const at = request.clock();
          const [row] = await conn.callOpening<FreeRow & { granted_at: number | string }>("CALL keymesh_open_key_grant(?, ?, ?, ?, ?)", [
            at, request.ttlMs, request.holder, request.leaseHash, request.exclude.join(","),
          ]);
          if (!row) return undefined;
          // The procedure selected the new fence and the grant's date; the key's other columns are as they were.
          const pending = { key: toFree({ ...row, fence: Number(row.fence) - 1 }), fence: Number(row.fence), at: Number(row.granted_at) };
          if (!(await keep(pending))) {
            await conn.end("ROLLBACK");
            return undefined;
          }
          await conn.end("COMMIT");
          return pending;
        });
      }
      let pending: PendingGrant | undefined;
      const kept = await primary
        .transaction(async (trx) => {
          const writes = leaseWrites(trx);
          const key = await writes.nextFree(request.clock(), request.exclude);
          if (!key) return false;
          const at = request.clock();
          pending = { key, fence: await writes.grant(key, request.holder, at, request.ttlMs, request.leaseHash), at };
          if (!(await keep(pending))) throw NOT_KEPT;
          return true;
        })
        .catch((err: unknown) => {
          if (err === NOT_KEPT) return false;
          throw err;
        });
      return kept ? pending : undefined;
    },

    async extend(id, fence, now, until) {
      return primary.transaction(async (trx) => {
        const n = await keys(trx).where({ id, fence }).andWhere("leased_until", ">", now).update({ leased_until: until });
        if (n === 1) await trx("key_leases").where({ key_id: id, fence }).update({ expires_at: until });
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
