import { loadConfig } from "../../services/shared/config.js";
import { createDatabase } from "../../services/shared/storage/database.js";
import { registeredMigrations } from "../../services/migrations.js";
import { migrate, migrationStatus } from "../../services/shared/storage/migrate.js";
import { shutdownTelemetry } from "../../services/shared/telemetry/sdk.js";
import { EXIT, type Command } from "../command.js";
import { parseFlags } from "../flags.js";

const USAGE = `Usage: keymesh migrate [options]

Brings the database schema (KEYMESH_DATABASE_URL, default: SQLite under KEYMESH_DATA_DIR)
up to date and exits. Safe to run from several processes at once.

Options:
      --status   only report applied and pending migrations
  -h, --help     show this help`;

/** `keymesh migrate`: runs the database migrations (or reports their status) and exits. */
export const migrateCommand: Command = {
  name: "migrate",
  summary: "bring the database schema up to date and exit",
  usage: USAGE,
  async run(args, io) {
    const { values } = parseFlags(args, { status: { type: "boolean", default: false } });
    const config = loadConfig(io.env);
    const db = createDatabase({
      ...(config.databaseUrl === undefined ? {} : { url: config.databaseUrl }),
      dataDir: config.dataDir,
    });
    try {
      const migrations = await registeredMigrations();
      if (values.status) {
        const status = await migrationStatus(db, migrations);
        io.stdout.write(`${JSON.stringify({ dialect: db.dialect, ...status })}\n`);
      } else {
        const { applied } = await migrate(db, migrations);
        io.stdout.write(`${JSON.stringify({ dialect: db.dialect, applied })}\n`);
      }
      return EXIT.ok;
    } finally {
      await db.close();
      await shutdownTelemetry().catch(() => undefined);
    }
  },
};
