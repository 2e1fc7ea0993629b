import type { Knex } from "knex";
import { createTableIfMissing, type MigrationModule } from "../../storage/migrations/index.js";

/**
 * The mesh-wide state of the master keys: which version is primary, active or retired (key
 * material never enters the database). Shared like the audit trail: every service that
 * rotates sealed rows lists this migration among its own, and the first creates the table.
 * (Not `master_keys`: the key service's migrations drop a never-used table of that name.)
 */
async function up(knex: Knex): Promise<void> {
  await createTableIfMissing(knex, "master_key_versions", (t) => {
    t.integer("version").unsigned().notNullable().primary();
    t.string("state", 16).notNullable(); // 'primary' | 'active' | 'retired'
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
  });
}

async function down(): Promise<void> {}

/** The master-key state table, for the migrations of every service that uses rotation. */
export const masterKeyVersionsMigration: MigrationModule = { name: "master_key_versions", up, down };
