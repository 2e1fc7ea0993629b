import type { SealedRowSet } from "../shared/crypto/rotation/sealed-row-set.js";
import type { SealContext } from "../shared/crypto/envelope.js";
import { keyringSealContext } from "./seal-context.js";
import type { Database } from "../shared/storage/database.js";
import { userKeySealContext } from "./user-keys.js";

/**
 * The keys service's private keys as sealed row sets for the master-key rewrap: the signing
 * keyring and users' key pairs. Both tables key rows by `id` and keep `master_key_version`
 * next to the sealed `private_key_ciphertext`, indexed, so a scan for rows off the primary
 * is an index range.
 */
function idKeyedSet(db: Database, name: string, table: string, context: (id: string) => SealContext): SealedRowSet {
  return {
    name,

    async countByVersion(fresh = false) {
      const rows = (await (fresh ? db.primary : db.replica)(table).select("master_key_version").count({ n: "*" }).groupBy("master_key_version")) as {
        master_key_version: number;
        n: number | string;
      }[];
      return new Map(rows.map((r) => [Number(r.master_key_version), Number(r.n)]));
    },

    async scan(primary, after, limit) {
      const rows = (await db
        .primary(table)
        .select("id", "private_key_ciphertext")
        .whereNot("master_key_version", primary)
        .andWhere("id", ">", after)
        .orderBy("id")
        .limit(limit)) as { id: string; private_key_ciphertext: Uint8Array }[];
      return rows.map((r) => ({ key: r.id, sealed: Buffer.from(r.private_key_ciphertext), context: context(r.id) }));
    },

    // Compare-and-set on the old ciphertext, one transaction per batch: a row a concurrent
    // writer changed (another worker's rewrap of the same row) is left alone and reported.
    replace(items) {
      return db.primary.transaction(async (trx) => {
        const done: boolean[] = [];
        for (const { row, next, nextVersion } of items) {
          const n = await trx(table)
            .where({ id: row.key, private_key_ciphertext: row.sealed })
            .update({ private_key_ciphertext: next, master_key_version: nextVersion });
          done.push(n === 1);
        }
        return done;
      });
    },
  };
}

/** The signing keyring's private keys. */
export const createKeyringKeysSet = (db: Database) => idKeyedSet(db, "keys.keyring_keys", "keyring_keys", keyringSealContext);

/** Users' private keys. */
export const createUserKeysSet = (db: Database) => idKeyedSet(db, "keys.user_key_pairs", "user_key_pairs", userKeySealContext);
