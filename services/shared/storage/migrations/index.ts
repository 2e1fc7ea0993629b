import type { Knex } from "knex";
import { signingMigration } from "./0001_signing.js";
import { leasesMigration } from "./0002_leases.js";
import type { MigrationModule } from "./migration.js";
import { userKeysMigration } from "../../../keys/migrations/0003_user_keys.js";
import { messagesMigration } from "../../../messages/migrations/0001_messages.js";

export type { MigrationModule } from "./migration.js";

/**
 * Every migration, in the order it applies. Imported statically rather than found on disk:
 * the sources are TypeScript run through tsx, so knex's directory globbing would not work.
 * To add one, create `NNNN_name.ts` exporting a `MigrationModule` and append it here.
 */
export const migrations: readonly MigrationModule[] = [
  signingMigration,
  leasesMigration,
  userKeysMigration,
  { ...messagesMigration, name: "0004_messages" },
];

/** A knex MigrationSource serving `list` (default: all keymesh migrations) in order. */
export function createMigrationSource(
  list: readonly MigrationModule[] = migrations,
): Knex.MigrationSource<MigrationModule> {
  const names = new Set<string>();
  let previous = "";
  for (const m of list) {
    if (names.has(m.name)) throw new Error(`duplicate migration name ${m.name}`);
    if (m.name <= previous) throw new Error(`migration ${m.name} is out of order (after ${previous})`);
    names.add(m.name);
    previous = m.name;
  }
  return {
    getMigrations: async () => [...list],
    getMigrationName: (migration) => migration.name,
    getMigration: async (migration) => ({ up: migration.up, down: migration.down }),
  };
}
