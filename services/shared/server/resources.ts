import type { Logger } from "pino";
import type { Config } from "../config.js";
import type { Coordinator } from "../coordination/types.js";
import type { ServiceModule } from "./service-module.js";
import type { Database } from "../storage/database.js";

/**
 * The shared resources of a host process: one database (primary + optional replica) and one
 * coordinator, opened only when some running service declares it needs them, and closed
 * after every service has stopped. Storage and coordination code is loaded on demand, so a
 * process running only stateless services never loads knex or ioredis.
 */

/** Resources a host can be given instead of opening its own (tests). */
export interface Resources {
  readonly db: Database;
  readonly coordinator: Coordinator;
}

/** The resources of a running host. */
export interface OpenResources {
  /** The database for a module, or a stand-in that explains the missing `needs.database`. */
  databaseFor(module: ServiceModule): Database;
  /** The coordinator for a module, or a stand-in that explains the missing `needs.coordinator`. */
  coordinatorFor(module: ServiceModule): Coordinator;
  /** Closes what was opened here (given resources stay open). Safe to call more than once. */
  close(): Promise<void>;
}

/** Options for `openResources`. */
export interface OpenResourcesOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly modules: readonly ServiceModule[];
  readonly given: Partial<Resources>;
  /** Bring the schema up to date after opening the database. */
  readonly migrate: boolean;
}

/** A value that throws a clear error on any use: for resources a module did not declare. */
function undeclared<T extends object>(resource: string, module: string): T {
  return new Proxy({} as T, {
    get(_target, prop) {
      if (prop === "then") return undefined; // not a thenable
      throw new Error(`service "${module}" uses the ${resource} without declaring needs.${resource} in its module`);
    },
  });
}

/** Opens the database and coordinator if any module needs them. */
export async function openResources(opts: OpenResourcesOptions): Promise<OpenResources> {
  const { config, logger, modules, given } = opts;
  const needsDb = modules.some((m) => m.needs.database === true);
  const needsCoordinator = modules.some((m) => m.needs.coordinator === true);
  let db = given.db;
  let coordinator = given.coordinator;
  const ownsDb = db === undefined && needsDb;
  const ownsCoordinator = coordinator === undefined && needsCoordinator;

  try {
    if (ownsDb) {
      const { createDatabase } = await import("../storage/database.js");
      db = createDatabase({
        ...(config.databaseUrl === undefined ? {} : { url: config.databaseUrl }),
        ...(config.databaseReplicaUrl === undefined ? {} : { replicaUrl: config.databaseReplicaUrl }),
        dataDir: config.dataDir,
        logger: knexLogger(logger),
      });
      logger.info({ dialect: db.dialect, replica: config.databaseReplicaUrl !== undefined }, "database opened");
      if (opts.migrate) {
        // Each service owns its tables: a host migrates those of the services it runs.
        const [{ migrate }, { collectMigrations }] = await Promise.all([import("../storage/migrate.js"), import("../storage/migrations/index.js")]);
        const { applied } = await migrate(db, collectMigrations(modules));
        if (applied.length > 0) logger.info({ applied }, "database migrated");
      }
    }
    if (ownsCoordinator) {
      const { createCoordinator } = await import("../coordination/index.js");
      coordinator = createCoordinator({
        redisUrl: config.redisUrls,
        keyPrefix: config.redisPrefix,
        onError: (err, url) => logger.warn({ err: err.message, url: url.replace(/\/\/[^@/]*@/, "//***@") }, "redis connection error"),
      });
      logger.info({ kind: coordinator.kind }, "coordinator opened");
    }
  } catch (err) {
    if (ownsCoordinator) await coordinator?.close().catch(() => undefined);
    if (ownsDb) await db?.close().catch(() => undefined);
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    databaseFor: (module) => (module.needs.database === true && db !== undefined ? db : undeclared<Database>("database", module.name)),
    coordinatorFor: (module) =>
      module.needs.coordinator === true && coordinator !== undefined ? coordinator : undeclared<Coordinator>("coordinator", module.name),
    close() {
      closing ??= (async () => {
        if (ownsCoordinator) {
          await coordinator?.close().catch((err: unknown) => logger.warn({ err: String(err) }, "coordinator failed to close"));
        }
        if (ownsDb) await db?.close().catch((err: unknown) => logger.warn({ err: String(err) }, "database failed to close"));
      })();
      return closing;
    },
  };
}

/** Routes knex's own warnings into the JSON log. */
function knexLogger(logger: Logger) {
  return {
    warn: (message: unknown) => logger.warn({ source: "knex" }, String(message)),
    error: (message: unknown) => logger.error({ source: "knex" }, String(message)),
    deprecate: (method: string, alternative: string) => logger.warn({ source: "knex" }, `${method} is deprecated, use ${alternative}`),
    debug: (message: unknown) => logger.debug({ source: "knex" }, String(message)),
  };
}
