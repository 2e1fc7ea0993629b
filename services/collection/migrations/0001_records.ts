import type { Knex } from "knex";
import { createTableIfMissing, type MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * Records to sign, their signatures and the batch audit trail.
 *
 * - No double signing: `signatures.record_id` is the primary key, so a second signature for
 *   a record cannot be stored, whatever the application does.
 * - One acquisition, one batch: `batches (key_id, fence)` is unique.
 * - Claiming is an index range scan (see `records_claim_idx`).
 *
 * The foreign key joins only this service's tables; `key_id`, `batch_id` and `job_id` name
 * other services' rows and are checked by the writers, so each service's tables can move to a
 * database of their own. Tables that already exist are adopted as they are (databases made
 * before each service owned its tables got exactly these shapes).
 */
async function up(knex: Knex): Promise<void> {
  // The audit trail the invariants checker reads: one row per key acquisition that committed.
  await createTableIfMissing(knex, "batches", (t) => {
    t.string("id", 64).notNullable().primary();
    t.string("job_id", 64).notNullable();
    t.string("key_id", 64).notNullable();
    t.bigInteger("fence").notNullable();
    t.integer("size").notNullable(); // the job's batch size
    t.integer("claimed").notNullable().defaultTo(0); // records actually in the batch (≤ size)
    t.integer("stored").notNullable().defaultTo(0);
    t.integer("rejected").notNullable().defaultTo(0);
    t.string("outcome", 32).notNullable().defaultTo("open"); // 'open' | 'committed' | 'abandoned' | 'rejected'
    t.string("executor", 128).notNullable();
    t.string("trace_id", 32).nullable();
    t.bigInteger("start_at").notNullable(); // lease acquired
    t.bigInteger("committed_at").nullable(); // signatures stored
    t.bigInteger("ended_at").nullable(); // key given back, whatever the outcome
    t.unique(["key_id", "fence"], { indexName: "batches_key_fence_uq" });
    t.index(["job_id", "start_at"], "batches_job_idx");
  });

  await createTableIfMissing(knex, "records", (t) => {
    t.bigIncrements("id");
    t.binary("payload", 1024).notNullable();
    t.bigInteger("created_at").notNullable();
    // Set in the same transaction that inserts the signature; never cleared.
    t.boolean("signed").notNullable().defaultTo(false);
    t.string("claim_id", 64).nullable(); // the batch holding the claim
    t.string("claimed_by", 128).nullable(); // executor instance, for operators
    // 0 = never claimed or released. NOT NULL so that "claimable" is one range,
    // claim_expires_at < :now, instead of "IS NULL OR < :now".
    t.bigInteger("claim_expires_at").notNullable().defaultTo(0);
    t.string("job_id", 64).nullable(); // job of the latest claim
    // Claim the next batch as an index range scan, already in index order (no filesort):
    //   SELECT id FROM records WHERE signed = 0 AND claim_expires_at < :now
    //   ORDER BY claim_expires_at, id LIMIT :n FOR UPDATE SKIP LOCKED
    // Never-claimed rows (0) come first in id order, then expired claims, oldest first.
    t.index(["signed", "claim_expires_at", "id"], "records_claim_idx");
    // Release or inspect one batch's claim: WHERE claim_id = :batch.
    t.index(["claim_id"], "records_claim_id_idx");
  });

  await createTableIfMissing(knex, "signatures", (t) => {
    // The primary key is the guarantee: at most one signature per record, ever.
    t.bigInteger("record_id").unsigned().notNullable().primary();
    t.foreign("record_id", "signatures_record_fk").references("id").inTable("records");
    t.string("key_id", 64).notNullable();
    t.bigInteger("fence").notNullable();
    t.string("batch_id", 64).notNullable();
    t.binary("signature", 64).notNullable();
    t.bigInteger("signed_at").notNullable();
    t.index(["batch_id"], "signatures_batch_idx");
  });
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("signatures");
  await knex.schema.dropTableIfExists("records");
  await knex.schema.dropTableIfExists("batches");
}

/** Collection 0001: records, signatures and batches. */
export const recordsMigration: MigrationModule = { name: "0001_records", up, down };
