import type { Knex } from "knex";
import type { MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * Batch history is one row per batch (its id), no longer one per lease: a unique (key, fence)
 * with insert-ignore let a second batch under one lease store signatures with no history row.
 * Collection now refuses that second batch itself (the accepted fence must rise strictly)
 * and records the refusal under the batch's own id. The (key, fence) lookup stays indexed.
 */
async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("batches", (t) => {
    t.dropUnique(["key_id", "fence"], "batches_key_fence_uq");
    t.index(["key_id", "fence"], "batches_key_fence_idx");
  });
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("batches", (t) => {
    t.dropIndex(["key_id", "fence"], "batches_key_fence_idx");
    t.unique(["key_id", "fence"], { indexName: "batches_key_fence_uq" });
  });
}

/** Collection 0004: one history row per batch. */
export const batchHistoryMigration: MigrationModule = { name: "0004_batch_history", up, down };
