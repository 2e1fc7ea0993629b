import type { Knex } from "knex";
import { dialectOf, tableDefaults, type MigrationModule } from "../../shared/storage/migrations/index.js";

/**
 * The vault's tables: secrets (metadata), their versions (sealed values) and read grants.
 *
 * - A name is unique per owner, not globally: a global constraint would let anyone probe
 *   for other principals' secret names through "name taken" errors.
 * - `secret_versions.ciphertext` is the envelope (header + nonce + ciphertext + tag). A
 *   64 KiB value plus 33 bytes of envelope does not fit MySQL's 65,535-byte BLOB, hence
 *   MEDIUMBLOB. Destroying a version sets it to NULL.
 * - `master_key_version` mirrors the envelope header so the rewrap can find rows by index.
 */
async function up(knex: Knex): Promise<void> {
  const mysql = dialectOf(knex) === "mysql";
  await knex.schema.createTable("secrets", (t) => {
    tableDefaults(knex, t);
    t.string("id", 36).notNullable().primary();
    t.string("owner", 160).notNullable();
    t.string("name", 255).nullable();
    t.text("labels").notNullable(); // JSON object
    t.integer("current_version").unsigned().notNullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("updated_at").notNullable();
    t.unique(["owner", "name"], { indexName: "secrets_owner_name_uq" });
    t.index(["name"], "secrets_name_idx");
  });
  await knex.schema.createTable("secret_versions", (t) => {
    tableDefaults(knex, t);
    t.string("secret_id", 36).notNullable();
    t.integer("version").unsigned().notNullable();
    t.string("state", 16).notNullable(); // 'active' | 'deleted' | 'destroyed'
    if (mysql) t.specificType("ciphertext", "MEDIUMBLOB").nullable();
    else t.binary("ciphertext").nullable();
    t.integer("master_key_version").unsigned().notNullable().defaultTo(0); // 0 once destroyed
    t.integer("size").unsigned().notNullable();
    t.bigInteger("created_at").notNullable();
    t.bigInteger("deleted_at").nullable();
    t.primary(["secret_id", "version"]);
    t.index(["master_key_version", "secret_id", "version"], "secret_versions_mkv_idx");
  });
  await knex.schema.createTable("secret_grants", (t) => {
    tableDefaults(knex, t);
    t.string("secret_id", 36).notNullable();
    t.string("principal", 160).notNullable();
    t.string("granted_by", 160).notNullable();
    t.bigInteger("created_at").notNullable();
    t.primary(["secret_id", "principal"]);
    t.index(["principal"], "secret_grants_principal_idx");
  });
}

async function down(knex: Knex): Promise<void> {
  for (const table of ["secret_grants", "secret_versions", "secrets"]) await knex.schema.dropTableIfExists(table);
}

/** Vault 0001: secrets, their versions and read grants. */
export const secretsMigration: MigrationModule = { name: "0001_secrets", up, down };
