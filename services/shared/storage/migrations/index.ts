import type { Knex } from "knex";
import type { MigrationModule } from "./migration.js";

export { createTableIfMissing, dialectOf, procedureMigration, tableDefaults, type MigrationModule } from "./migration.js";

/** A service and the migrations of the tables it owns, oldest first. */
export interface MigrationOwner {
  /** The service's short name; qualifies its migration names ("keys/0001_keyring"). */
  readonly name: string;
  readonly migrations?: readonly MigrationModule[];
}

/**
 * Names of the shared migrations that created every table before each service owned its own.
 * Databases made back then still list them; the services' first migrations adopt those tables
 * (see `createTableIfMissing`), so these names are known history, not a newer release's work.
 */
export const RETIRED_MIGRATIONS: readonly string[] = ["0001_signing", "0002_leases"];

/**
 * Every owner's migrations as one list, names qualified by the owner ("collection/0001_records").
 * Owners apply in the order given and each owner's migrations in name order; no migration
 * depends on another service's tables, so the order between owners does not matter.
 */
export function collectMigrations(owners: readonly MigrationOwner[]): MigrationModule[] {
  const all: MigrationModule[] = [];
  for (const owner of owners) {
    let previous = "";
    for (const m of owner.migrations ?? []) {
      if (m.name <= previous) throw new Error(`migration ${owner.name}/${m.name} is out of order (after ${previous})`);
      previous = m.name;
      all.push({ name: `${owner.name}/${m.name}`, up: m.up, down: m.down });
    }
  }
  return all;
}

/** A knex MigrationSource serving `list` in its order; names must be unique. */
export function createMigrationSource(list: readonly MigrationModule[]): Knex.MigrationSource<MigrationModule> {
  const names = new Set<string>();
  for (const m of list) {
    if (names.has(m.name)) throw new Error(`duplicate migration name ${m.name}`);
    names.add(m.name);
  }
  return {
    getMigrations: async () => [...list],
    getMigrationName: (migration) => migration.name,
    getMigration: async (migration) => ({ up: migration.up, down: migration.down }),
  };
}
