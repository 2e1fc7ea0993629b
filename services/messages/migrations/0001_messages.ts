import type { Knex } from "knex";
import { dialectOf, tableDefaults, type MigrationModule } from "../../shared/storage/migrations/migration.js";

/**
 * The messages service's inbox. Only ciphertext is stored: `enc` is the HPKE encapsulated
 * key, `ciphertext` the AES-256-GCM body with its tag, sealed to `recipient_key_id`.
 * A 64 KiB body plus its tag does not fit MySQL's 65,535-byte BLOB, hence MEDIUMBLOB.
 * Ids are UUIDv7, so "newest first" is descending id order on the recipient's index.
 */
async function up(knex: Knex): Promise<void> {
  const mysql = dialectOf(knex) === "mysql";
  await knex.schema.createTable("messages", (t) => {
    tableDefaults(knex, t);
    t.string("id", 36).notNullable().primary();
    t.string("sender_id", 64).notNullable();
    t.string("sender_username", 64).notNullable();
    t.string("recipient_id", 64).notNullable();
    t.string("recipient_username", 64).notNullable();
    t.string("recipient_key_id", 36).notNullable();
    t.binary("enc", 32).notNullable();
    if (mysql) t.specificType("ciphertext", "MEDIUMBLOB").notNullable();
    else t.binary("ciphertext").notNullable();
    t.integer("size").unsigned().notNullable();
    t.boolean("is_read").notNullable().defaultTo(false);
    t.bigInteger("sent_at").notNullable();
    t.index(["recipient_id", "id"], "messages_inbox_idx");
    t.index(["recipient_id", "is_read", "id"], "messages_unread_idx");
  });
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("messages");
}

/** Migration 0001 of the messages service: the inbox. */
export const messagesMigration: MigrationModule = { name: "0001_messages", up, down };
