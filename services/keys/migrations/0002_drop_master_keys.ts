import type { Knex } from "knex";
import type { MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * Drops `master_keys`, a metadata table the retired shared schema created and no code ever
 * read or wrote: master keys live outside the database (KEYMESH_MASTER_KEYS), and the
 * per-version counts come from `keyring_keys.master_key_version`.
 */
async function up(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("master_keys");
}

/** Nothing to restore: the table never held anything anyone read. */
async function down(): Promise<void> {}

/** Keys 0002: the never-read master_keys table goes. */
export const dropMasterKeysMigration: MigrationModule = { name: "0002_drop_master_keys", up, down };
