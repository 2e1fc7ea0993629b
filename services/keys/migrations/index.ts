import { auditMigration } from "../../shared/audit/migration.js";
import { masterKeyVersionsMigration } from "../../shared/crypto/rotation/migration.js";
import type { MigrationModule } from "../../shared/storage/migrations/index.js";
import { keyringMigration } from "./0001_keyring.js";
import { dropMasterKeysMigration } from "./0002_drop_master_keys.js";
import { leaseHashesMigration } from "./0003_lease_hashes.js";
import { userKeysMigration } from "./0005_user_keys.js";
import { freeKeysIndexMigration } from "./0007_free_keys_index.js";
import { grantProcedureMigration } from "./0008_grant_procedure.js";

/**
 * The key service's migrations, oldest first. Imported statically rather than found on disk:
 * the sources are TypeScript run through tsx, so knex's directory globbing would not work.
 */
export const keysMigrations: readonly MigrationModule[] = [
  keyringMigration,
  dropMasterKeysMigration,
  leaseHashesMigration,
  // The shared audit trail keyring changes and refused leases are recorded to.
  { ...auditMigration, name: "0004_audit" },
  userKeysMigration,
  // The mesh-wide master-key state the keys service now shares with the vault.
  { ...masterKeyVersionsMigration, name: "0006_master_key_versions" },
  freeKeysIndexMigration,
  grantProcedureMigration,
];
