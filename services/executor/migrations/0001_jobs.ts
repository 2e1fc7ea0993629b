import type { Knex } from "knex";
import { createTableIfMissing, type MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * Signing jobs: the one thing executors working on one job share besides records. The batch
 * size is fixed for the job's lifetime (invariant 5), and so is the lease TTL.
 *
 * A `jobs` table that already exists is adopted (databases made before each service owned
 * its tables); one made by the first retired shared migration alone lacks `lease_ttl_ms`.
 */
async function up(knex: Knex): Promise<void> {
  await createTableIfMissing(knex, "jobs", (t) => {
    t.string("id", 64).notNullable().primary();
    t.integer("batch_size").notNullable();
    t.integer("concurrency").notNullable();
    t.string("state", 16).notNullable(); // 'running' | 'succeeded' | 'failed'
    t.bigInteger("total_records").notNullable().defaultTo(0);
    t.string("trace_id", 32).nullable();
    t.string("created_by", 128).nullable();
    t.string("error", 512).nullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("started_at").nullable();
    t.bigInteger("finished_at").nullable();
    t.integer("lease_ttl_ms").notNullable().defaultTo(10_000);
    t.index(["state", "created_at"], "jobs_state_idx");
  });
  if (!(await knex.schema.hasColumn("jobs", "lease_ttl_ms"))) {
    await knex.schema.alterTable("jobs", (t) => {
      t.integer("lease_ttl_ms").notNullable().defaultTo(10_000);
    });
  }
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("jobs");
}

/** Executor 0001: jobs. */
export const jobsMigration: MigrationModule = { name: "0001_jobs", up, down };
