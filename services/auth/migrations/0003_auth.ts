import type { Knex } from "knex";
import { tableDefaults, type MigrationModule } from "../../shared/storage/migrations/migration.js";

/**
 * The auth service's tables.
 *
 * `auth_users`: one row per registered user; the password only as a scrypt hash string
 * (parameters and salt included), `admin` set by `keymesh admin grant`.
 * `auth_sessions`: session tokens when no Redis is configured, keyed by the SHA-256 of the
 * token (the token itself is never stored), with their expiry.
 */
async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("auth_users", (t) => {
    tableDefaults(knex, t);
    t.string("id", 36).primary();
    t.string("username", 64).notNullable();
    t.string("password_hash", 255).notNullable();
    t.boolean("admin").notNullable().defaultTo(false);
    t.bigInteger("created_at").notNullable();
    t.unique(["username"], { indexName: "auth_users_username_uq" });
  });
  await knex.schema.createTable("auth_sessions", (t) => {
    tableDefaults(knex, t);
    t.string("token_hash", 64).primary();
    t.string("user_id", 36).notNullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("expires_at").notNullable();
    t.index(["user_id"], "auth_sessions_user_idx");
    t.index(["expires_at"], "auth_sessions_expires_idx");
  });
}

async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists("auth_sessions");
  await knex.schema.dropTableIfExists("auth_users");
}

/** Migration 0003: users and database-backed sessions of the auth service. */
export const authMigration: MigrationModule = { name: "0003_auth", up, down };
