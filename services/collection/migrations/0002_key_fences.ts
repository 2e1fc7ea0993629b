import type { Knex } from "knex";
import { createTableIfMissing, type MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * The highest fence collection has accepted a commit under, per key. A commit raises it in
 * its transaction and is refused when the key's row already holds a higher fence, so once a
 * newer lease of a key committed, no older holder's batch of that key can land (see
 * docs/signing.md). Collection's own record of what it accepted: it never reads the key
 * service's tables.
 *
 * Seeded from the committed batches already stored, so an upgraded database refuses stale
 * fences from its first commit on.
 */
async function up(knex: Knex): Promise<void> {
  await createTableIfMissing(knex, "collection_key_fences", (t) => {
    t.string("key_id", 64).notNullable().primary();
    t.bigInteger("fence").notNullable();
    t.bigInteger("updated_at").notNullable();
  });
  const seeded = (await knex("batches")
    .select("key_id")
    .max({ fence: "fence" })
    .where("outcome", "committed")
    .groupBy("key_id")) as { key_id: string; fence: number | string }[];
  const now = Date.now();
  const rows = seeded.map((r) => ({ key_id: r.key_id, fence: Number(r.fence), updated_at: now }));
  // SQLite caps a statement's terms; 300 rows of three columns stay well below.
  for (let i = 0; i < rows.length; i += 300) {
    await knex("collection_key_fences").insert(rows.slice(i, i + 300)).onConflict("key_id").ignore();
  }
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("collection_key_fences");
}

/** Collection 0002: the highest accepted fence per key. */
export const keyFencesMigration: MigrationModule = { name: "0002_key_fences", up, down };
