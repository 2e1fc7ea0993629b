import type { MigrationModule } from "../../shared/storage/migrations/index.js";
import { recordsMigration } from "./0001_records.js";
import { keyFencesMigration } from "./0002_key_fences.js";
import { claimsMigration } from "./0003_claims.js";
import { batchHistoryMigration } from "./0004_batch_history.js";
import { rangeClaimsMigration } from "./0005_range_claims.js";
import { commitProcedureMigration } from "./0006_commit_procedure.js";
import { claimProcedureMigration } from "./0007_claim_procedure.js";
import { seedLockMigration } from "./0008_seed_lock.js";

/** The collection service's migrations, oldest first. */
export const collectionMigrations: readonly MigrationModule[] = [recordsMigration, keyFencesMigration, claimsMigration, batchHistoryMigration, rangeClaimsMigration, commitProcedureMigration, claimProcedureMigration, seedLockMigration];
