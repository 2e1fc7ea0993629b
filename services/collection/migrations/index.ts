import type { MigrationModule } from "../../shared/storage/migrations/index.js";
import { recordsMigration } from "./0001_records.js";
import { keyFencesMigration } from "./0002_key_fences.js";

/** The collection service's migrations, oldest first. */
export const collectionMigrations: readonly MigrationModule[] = [recordsMigration, keyFencesMigration];
