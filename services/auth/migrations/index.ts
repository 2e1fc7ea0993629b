import type { MigrationModule } from "../../shared/storage/migrations/index.js";
import { usersSessionsMigration } from "./0001_users_sessions.js";

/** The auth service's migrations, oldest first. */
export const authMigrations: readonly MigrationModule[] = [usersSessionsMigration];
