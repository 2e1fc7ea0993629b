import { auditMigration } from "../../shared/audit/migration.js";
import type { MigrationModule } from "../../shared/storage/migrations/index.js";
import { usersSessionsMigration } from "./0001_users_sessions.js";

/**
 * The auth service's migrations, oldest first: its users and sessions, then the shared audit
 * trail it records logins to (created by whichever service gets there first).
 */
export const authMigrations: readonly MigrationModule[] = [usersSessionsMigration, { ...auditMigration, name: "0002_audit" }];
