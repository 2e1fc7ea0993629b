import type { MigrationModule } from "../../shared/storage/migrations/index.js";
import { jobsMigration } from "./0001_jobs.js";

/** The executor's migrations, oldest first. */
export const executorMigrations: readonly MigrationModule[] = [jobsMigration];
