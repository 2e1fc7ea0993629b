import type { Knex } from "knex";
import { createTableIfMissing, type MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * The auth service's tables.
 *
 * `auth_users`: one row per registered user; the password only as a scrypt hash string
 * (parameters and salt included), `admin` set by `keymesh admin grant`.
 * `auth_sessions`: session tokens when no Redis is configured, keyed by the SHA-256 of the
 * token (the token itself is never stored), with their expiry.
 */
async function up(knex: Knex): Promise<void> {
  await createTableIfMissing(knex, "auth_users", (t) => {
    t.string("id", 36).primary();
    t.string("username", 64).notNullable();
    t.string("password_hash", 255).notNullable();
    t.boolean("admin").notNullable().defaultTo(false);
    t.bigInteger("created_at").notNullable();
    t.unique(["username"], { indexName: "auth_users_username_uq" });
  });
  await createTableIfMissing(knex, "auth_sessions", (t) => {
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

/** Auth migration 0001: users and database-backed sessions. */
export const usersSessionsMigration: MigrationModule = { name: "0001_users_sessions", up, down };
