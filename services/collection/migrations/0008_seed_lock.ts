import type { Knex } from "knex";
import { createTableIfMissing, type MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * A row that seeding locks for its whole transaction, so seeds commit one after another and
 * record ids grow in commit order. Fresh claims take the records after the highest id any
 * claim covers (0005): if two seeds ran at once on MySQL/MariaDB, the first could hold lower
 * ids uncommitted while the second committed higher ones, a claim could cover those, and the
 * first seed's records would then appear below every fresh claim, never claimed, and the job
 * would wait for them for ever. (SQLite has one writer: its seeds never overlap.)
 */
async function up(knex: Knex): Promise<void> {
  await createTableIfMissing(knex, "collection_locks", (t) => {
    t.string("name", 32).notNullable().primary();
  });
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("collection_locks");
}

/** Collection 0008: the lock that serialises seeding. */
export const seedLockMigration: MigrationModule = { name: "0008_seed_lock", up, down };
