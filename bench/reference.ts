import { generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import type { Knex } from "knex";

/**
 * The reference the mesh is measured against: the same records signed and stored by one
 * plain loop in one process — no RPC, no leases, no claims. It pages through unsigned
 * records, signs each page with one key (round robin over `keyCount` keys) and stores the
 * page's signatures with one multi-row insert and one update, in one transaction.
 */
export async function referenceLoop(db: Knex, opts: { batchSize: number; keyCount: number }): Promise<{ wallMs: number; signed: number }> {
  const keys: { id: string; key: KeyObject }[] = Array.from({ length: opts.keyCount }, (_, i) => ({
    id: `ref-${i}`,
    key: generateKeyPairSync("ed25519").privateKey,
  }));
  const started = performance.now();
  let after = 0;
  let signed = 0;
  for (let batch = 0; ; batch++) {
    const rows = (await db("records").select("id", "payload").where("id", ">", after).orderBy("id").limit(opts.batchSize)) as {
      id: number;
      payload: Buffer;
    }[];
    if (rows.length === 0) break;
    const { id: keyId, key } = keys[batch % keys.length]!;
    const now = Date.now();
    const signatures = rows.map((r) => ({
      record_id: r.id,
      key_id: keyId,
      fence: 1,
      batch_id: `ref-${batch}`,
      signature: sign(null, r.payload, key),
      signed_at: now,
    }));
    await db.transaction(async (trx) => {
      await trx("signatures").insert(signatures);
      await trx("records").whereIn("id", rows.map((r) => r.id)).update({ signed: 1 });
    });
    signed += rows.length;
    after = rows[rows.length - 1]!.id;
  }
  return { wallMs: performance.now() - started, signed };
}
