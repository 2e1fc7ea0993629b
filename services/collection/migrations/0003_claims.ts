import type { Knex } from "knex";
import { createTableIfMissing, type MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * One row per claim, written by ClaimBatch: the batch history the commit writes takes its
 * job, claimant and start time from here (the server's own clock), never from the client.
 * Claims are short-lived; rows older than a day are pruned by later claims.
 */
async function up(knex: Knex): Promise<void> {
  await createTableIfMissing(knex, "claims", (t) => {
    t.string("id", 64).notNullable().primary();
    t.string("job_id", 64).notNullable();
    t.string("claimant", 128).notNullable();
    t.integer("size").notNullable(); // records asked for (the job's batch size)
    t.integer("claimed").notNullable(); // records handed out
    t.bigInteger("claimed_at").notNullable();
    t.bigInteger("expires_at").notNullable();
    t.index(["claimed_at"], "claims_claimed_at_idx");
  });
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("claims");
}

/** Collection 0003: claims, for truthful batch history. */
export const claimsMigration: MigrationModule = { name: "0003_claims", up, down };
