import { auditMigration } from "../../shared/audit/migration.js";
import { masterKeyVersionsMigration } from "../../shared/crypto/rotation/migration.js";
import type { MigrationModule } from "../../shared/storage/migrations/index.js";
import { secretsMigration } from "./0001_secrets.js";

/**
 * The vault's migrations, oldest first: its own tables, then the shared audit trail and
 * master-key state it writes to (created by whichever service gets there first).
 */
export const vaultMigrations: readonly MigrationModule[] = [
  secretsMigration,
  { ...auditMigration, name: "0002_audit" },
  { ...masterKeyVersionsMigration, name: "0003_master_key_versions" },
];
