import { loadServiceModules } from "./registry.js";
import { collectMigrations, type MigrationModule } from "./shared/storage/migrations/index.js";

/**
 * The migrations of every registered service (or of the named ones), as one list for the
 * runner: what `keymesh migrate` applies and what tests migrate a fresh database with.
 */
export async function registeredMigrations(names: readonly string[] = []): Promise<MigrationModule[]> {
  return collectMigrations(await loadServiceModules(names));
}
