import type { Knex } from "knex";
import { tableDefaults, type MigrationModule } from "./migration.js";

/**
 * The signing pipeline's schema: records to sign, their signatures, the keyring with its
 * fencing tokens, the batch audit trail, jobs and master-key metadata.
 *
 * Conventions: every timestamp is a BIGINT of Unix milliseconds (portable, no time zones);
 * identifiers are strings of at most 64 characters; binary data is VARBINARY on MySQL and
 * BLOB on SQLite. Foreign keys only join tables owned by the same service (records and
 * signatures); other references (key_id, batch_id, job_id) are checked by the writers, so
 * the services stay free to split into separate databases.
 *
 * How the invariants map onto the schema:
 * - No double signing: `signatures.record_id` is the primary key, so a second signature for
 *   a record cannot be stored, whatever the application does.
 * - Fencing: `keyring_keys.fence` is incremented by every lease acquisition (a conditional
 *   UPDATE in the same statement that takes the key). A commit re-checks, in its
 *   transaction, that the batch's fence is still the key's current one, and inserts the
 *   signatures and flips `records.signed` together; a stale holder's commit matches no row.
 * - One acquisition, one batch: `batches (key_id, fence)` is unique.
 * - Claiming is an index range scan (see `records_claim_idx`).
 */

/** Tables in creation order; dropped in reverse. */
const TABLES = ["master_keys", "jobs", "keyring_keys", "batches", "records", "signatures"] as const;

async function up(knex: Knex): Promise<void> {
  // Master-key metadata only; key material never enters the database.
  await knex.schema.createTable("master_keys", (t) => {
    tableDefaults(knex, t);
    t.integer("version").unsigned().notNullable().primary();
    t.string("state", 16).notNullable(); // 'primary' | 'active' | 'retired'
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
  });

  await knex.schema.createTable("jobs", (t) => {
    tableDefaults(knex, t);
    t.string("id", 64).notNullable().primary();
    t.integer("batch_size").notNullable(); // fixed for the job's lifetime (invariant 5)
    t.integer("concurrency").notNullable();
    t.string("state", 16).notNullable(); // 'pending' | 'running' | 'succeeded' | 'failed' | 'cancelled'
    t.bigInteger("total_records").notNullable().defaultTo(0);
    t.string("trace_id", 32).nullable();
    t.string("created_by", 128).nullable();
    t.string("error", 512).nullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("started_at").nullable();
    t.bigInteger("finished_at").nullable();
    t.index(["state", "created_at"], "jobs_state_idx");
  });

  await knex.schema.createTable("keyring_keys", (t) => {
    tableDefaults(knex, t);
    t.string("id", 64).notNullable().primary();
    t.string("algorithm", 16).notNullable().defaultTo("ed25519");
    t.binary("public_key", 32).notNullable();
    // Envelope-encrypted (self-describing header + nonce + ciphertext + tag).
    t.binary("private_key_ciphertext", 512).notNullable();
    t.integer("master_key_version").unsigned().notNullable();
    // Current fencing token; every acquisition increments it. Commits carry the value they
    // were handed and are refused once it moved on.
    t.bigInteger("fence").notNullable().defaultTo(0);
    t.bigInteger("last_used_at").notNullable().defaultTo(0); // LRU order (invariant 4)
    t.bigInteger("leased_until").notNullable().defaultTo(0); // 0 or past: free
    t.string("holder", 128).nullable();
    t.bigInteger("created_at").notNullable();
    // "Least recently used free key": walk this index, skip rows with leased_until >= now.
    t.index(["last_used_at", "id"], "keyring_keys_lru_idx");
    // Rewrap progress: COUNT(*) WHERE master_key_version < :primary.
    t.index(["master_key_version"], "keyring_keys_mkv_idx");
  });

  // The audit trail the invariants checker reads: one row per key acquisition.
  await knex.schema.createTable("batches", (t) => {
    tableDefaults(knex, t);
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

  await knex.schema.createTable("records", (t) => {
    tableDefaults(knex, t);
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

  await knex.schema.createTable("signatures", (t) => {
    tableDefaults(knex, t);
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
  for (const table of [...TABLES].reverse()) {
    await knex.schema.dropTableIfExists(table);
  }
}

/** Migration 0001: the signing pipeline's tables. */
export const signingMigration: MigrationModule = { name: "0001_signing", up, down };
