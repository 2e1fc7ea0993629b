import type { SealedRowSet } from "../shared/crypto/rotation/sealed-row-set.js";
import type { Database } from "../shared/storage/database.js";
import { secretSealContext } from "./vault.js";

/** The vault's secret versions as a sealed row set for the master-key rewrap. */
export function createSecretVersionsSet(db: Database): SealedRowSet {
  const k = db.primary;
  return {
    name: "vault.secret_versions",

    countByVersion: async (fresh = false) => {
      const rows = (await (fresh ? k : db.replica)("secret_versions")
        .select("master_key_version")
        .count({ n: "*" })
        .whereNotNull("ciphertext")
        .groupBy("master_key_version")) as { master_key_version: number; n: number | string }[];
      return new Map(rows.map((r) => [Number(r.master_key_version), Number(r.n)]));
    },

    scan: async (primary, after, limit) => {
      let q = k("secret_versions")
        .select("secret_id", "version", "ciphertext")
        .whereNot("master_key_version", primary)
        .whereNotNull("ciphertext");
      if (after !== "") {
        const slash = after.lastIndexOf("/");
        q = q.whereRaw("(secret_id, version) > (?, ?)", [after.slice(0, slash), Number(after.slice(slash + 1))]);
      }
      const rows = (await q.orderBy(["secret_id", "version"]).limit(limit)) as { secret_id: string; version: number; ciphertext: Uint8Array }[];
      return rows.map((r) => ({
        key: `${r.secret_id}/${r.version}`,
        sealed: Buffer.from(r.ciphertext),
        context: secretSealContext(r.secret_id, Number(r.version)),
      }));
    },

    replace: (items) =>
      k.transaction(async (trx) => {
        const done: boolean[] = [];
        for (const { row, next, nextVersion } of items) {
          const n = await trx("secret_versions")
            .where({ secret_id: row.context.id, version: row.context.rowVersion ?? 0, ciphertext: row.sealed })
            .update({ ciphertext: next, master_key_version: nextVersion });
          done.push(n === 1);
        }
        return done;
      }),
  };
}
