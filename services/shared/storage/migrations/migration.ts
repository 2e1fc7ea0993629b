import type { Knex } from "knex";
import type { Dialect } from "../database.js";

/**
 * One versioned schema change. `name` is recorded in the migrations table once `up` has run;
 * names sort in the order they must apply (`0001_…`, `0002_…`).
 *
 * Migrations must run on MySQL/MariaDB and SQLite alike, and be backward compatible with the
 * previous release's code (expand, then contract in a later migration), because during a
 * rolling upgrade old and new processes share one schema.
 */
export interface MigrationModule {
  readonly name: string;
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

/** The dialect a knex instance (or transaction) talks to. */
export function dialectOf(knex: Knex): Dialect {
  const client = String((knex.client as { config?: { client?: unknown } }).config?.client ?? "");
  return client === "mysql2" || client === "mysql" ? "mysql" : "sqlite";
}

/**
 * Table options every keymesh table gets on MySQL: InnoDB, utf8mb4 with binary collation, so
 * identifiers compare byte for byte exactly as they do on SQLite ("Key1" ≠ "key1").
 */
export function tableDefaults(knex: Knex, table: Knex.CreateTableBuilder): void {
  if (dialectOf(knex) !== "mysql") return;
  table.engine("InnoDB");
  table.charset("utf8mb4");
  table.collate("utf8mb4_bin");
}

/**
 * CREATE TABLE unless the table exists. A service's first migration creates its tables this
 * way because databases made before the tables moved into their services already hold them
 * (created by the retired shared migrations), and adopting them must not fail.
 */
export async function createTableIfMissing(knex: Knex, name: string, build: (t: Knex.CreateTableBuilder) => void): Promise<void> {
  if (await knex.schema.hasTable(name)) return;
  await knex.schema.createTable(name, (t) => {
    tableDefaults(knex, t);
    build(t);
  });
}

/**
 * A migration that creates one stored procedure on MySQL/MariaDB (dropping an older one of the
 * name first) and does nothing on SQLite, which has none: there the same statements run one by
 * one from the service's store. `create` is the whole `CREATE PROCEDURE <procedure>(…)` text.
 */
export function procedureMigration(name: string, procedure: string, create: string): MigrationModule {
  if (!new RegExp(`^\\s*CREATE PROCEDURE ${procedure}\\(`).test(create)) throw new Error(`migration ${name} does not create procedure ${procedure}`);
  const drop = (knex: Knex) => knex.raw(`DROP PROCEDURE IF EXISTS ${procedure}`);
  return {
    name,
    async up(knex) {
      if (dialectOf(knex) !== "mysql") return;
      await drop(knex);
      await knex.raw(create);
    },
    async down(knex) {
      if (dialectOf(knex) === "mysql") await drop(knex);
    },
  };
}
