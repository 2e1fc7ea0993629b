import type { MigrationModule } from "../../shared/storage/migrations/index.js";
import { messagesMigration } from "./0001_messages.js";

/** The messages service's migrations, oldest first. */
export const messagesMigrations: readonly MigrationModule[] = [messagesMigration];
