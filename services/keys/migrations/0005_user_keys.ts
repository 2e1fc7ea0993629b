import type { Knex } from "knex";
import { tableDefaults, type MigrationModule } from "../../shared/storage/migrations/migration.js";

/**
 * Users' key pairs. The private key is stored only sealed (the envelope of
 * services/shared/crypto/envelope.ts, bound to `user_key_pairs/private_key/<id>`);
 * `master_key_version` mirrors the envelope header so the rewrap finds rows by index.
 * `owner_username` is recorded from the caller's principal at creation, so a sender can
 * look up a recipient's messaging key by username without the keys service reading the
 * auth service's tables (usernames never change).
 */
async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("user_key_pairs", (t) => {
    tableDefaults(knex, t);
    t.string("id", 36).notNullable().primary();
    t.string("owner_id", 64).notNullable();
    t.string("owner_username", 64).notNullable();
    t.string("algorithm", 16).notNullable(); // 'x25519' | 'ed25519'
    t.string("purpose", 16).notNullable(); // 'messaging' | 'signing'
    t.binary("public_key", 32).notNullable();
    t.binary("private_key_ciphertext", 128).notNullable();
    t.integer("master_key_version").unsigned().notNullable();
    t.boolean("messaging_default").notNullable().defaultTo(false);
    t.bigInteger("created_at").notNullable();
    t.index(["owner_id", "id"], "user_key_pairs_owner_idx");
    t.index(["owner_username", "messaging_default"], "user_key_pairs_username_idx");
    t.index(["master_key_version", "id"], "user_key_pairs_mkv_idx");
  });
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("user_key_pairs");
}

/** Migration 0003 of the keys service: users' key pairs. */
export const userKeysMigration: MigrationModule = { name: "0005_user_keys", up, down };
