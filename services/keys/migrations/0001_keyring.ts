import type { Knex } from "knex";
import { createTableIfMissing, type MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * The signing keyring and its lease history. Conventions of every keymesh table: timestamps
 * are BIGINT Unix milliseconds, identifiers strings of at most 64 characters, binary data
 * VARBINARY on MySQL and BLOB on SQLite.
 *
 * Fencing: `keyring_keys.fence` is incremented by every lease acquisition, in the conditional
 * UPDATE that takes the key; `key_leases` gets one row per acquisition in the same
 * transaction (who took which key under which fence, when, and when the key had last been
 * used), which the invariants checker reads to prove least-recently-used order and that no
 * two leases of one key were live at once.
 *
 * Tables that already exist are adopted as they are: databases made before each service
 * owned its tables got exactly these shapes from the retired shared migrations.
 */
async function up(knex: Knex): Promise<void> {
  await createTableIfMissing(knex, "keyring_keys", (t) => {
    t.string("id", 64).notNullable().primary();
    t.string("algorithm", 16).notNullable().defaultTo("ed25519");
    t.binary("public_key", 32).notNullable();
    // Envelope-encrypted (self-describing header + nonce + ciphertext + tag).
    t.binary("private_key_ciphertext", 512).notNullable();
    t.integer("master_key_version").unsigned().notNullable();
    // Current fencing token; every acquisition increments it.
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
  await createTableIfMissing(knex, "key_leases", (t) => {
    t.bigIncrements("id");
    t.string("key_id", 64).notNullable();
    t.bigInteger("fence").notNullable();
    t.string("holder", 128).notNullable();
    t.bigInteger("acquired_at").notNullable();
    t.bigInteger("previous_last_used_at").notNullable();
    t.bigInteger("expires_at").notNullable(); // moves with each renewal
    t.bigInteger("released_at").nullable();
    t.unique(["key_id", "fence"], { indexName: "key_leases_key_fence_uq" });
    t.index(["acquired_at"], "key_leases_acquired_idx");
  });
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("key_leases");
  await knex.schema.dropTableIfExists("keyring_keys");
}

/** Keys 0001: the keyring and its lease history. */
export const keyringMigration: MigrationModule = { name: "0001_keyring", up, down };
