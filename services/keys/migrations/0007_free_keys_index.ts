import type { Knex } from "knex";
import type { MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * The grant's index: released keys (leased_until = 0) in least-recently-used order. The grant
 * locks the first one with FOR UPDATE SKIP LOCKED; walking (last_used_at, id) instead, MariaDB
 * keeps a lock on every leased row it passes until the grant commits, and releases of those
 * keys wait behind it. With leased_until first, the walk sees released keys only.
 */
async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("keyring_keys", (t) => t.index(["leased_until", "last_used_at", "id"], "keyring_keys_free_idx"));
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable("keyring_keys", (t) => t.dropIndex(["leased_until", "last_used_at", "id"], "keyring_keys_free_idx"));
}

/** Keys 0007: the index the grant transaction walks. */
export const freeKeysIndexMigration: MigrationModule = { name: "0007_free_keys_index", up, down };
