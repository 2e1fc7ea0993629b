import { loadConfig } from "../../services/shared/config.js";
import { createCoordinator } from "../../services/shared/coordination/index.js";
import { masterKeysFor } from "../../services/shared/crypto/rotation/master-key-manager.js";
import { createLogger } from "../../services/shared/logger.js";
import { createDatabase } from "../../services/shared/storage/database.js";
import { shutdownTelemetry } from "../../services/shared/telemetry/sdk.js";
import { startKeyRewrapWorker } from "../../services/keys/rewrap.js";
import { EXIT, UsageError, type Command } from "../command.js";
import { parseFlags } from "../flags.js";
import { listenForInterrupt } from "../interrupt.js";

const USAGE = `Usage: keymesh worker rewrap

Runs one private-key rewrap worker, without serving anything: it joins the rewrap consumer
group on Redis (KEYMESH_REDIS_URL) and re-encrypts keyring and user private keys under the
primary master key as rotations enqueue them, until Ctrl-C or SIGTERM. Start as many as you
like; every \`keymesh serve keys\` process runs one too. It needs the database
(KEYMESH_DATABASE_URL) and every master key in use (KEYMESH_MASTER_KEYS), like the keys
service. A worker that dies mid-chunk loses nothing: after KEYMESH_REWRAP_CLAIM_IDLE_MS
another worker takes the chunk over.

Options:
  -h, --help   show this help`;

/** `keymesh worker rewrap`: a stand-alone private-key rewrap worker. */
export const workerCommand: Command = {
  name: "worker",
  summary: "run a background worker alone (rewrap: re-encrypt private keys after a rotation)",
  usage: USAGE,
  async run(args, io) {
    const { positionals } = parseFlags(args, {}, true);
    if (positionals[0] !== "rewrap" || positionals.length !== 1) throw new UsageError("the only worker is `keymesh worker rewrap`");
    const config = loadConfig(io.env);
    if (config.redisUrls.length === 0) {
      throw new UsageError("a stand-alone worker needs KEYMESH_REDIS_URL: without Redis the rewrap queue lives inside `keymesh serve`");
    }
    const logger = createLogger({ level: config.logLevel });
    const db = createDatabase({
      ...(config.databaseUrl === undefined ? {} : { url: config.databaseUrl }),
      dataDir: config.dataDir,
    });
    const coordinator = createCoordinator({ redisUrl: config.redisUrls });
    const interrupt = listenForInterrupt();
    try {
      logger.info({ idleClaimMs: config.rewrapClaimIdleMs }, "rewrap worker started");
      await startKeyRewrapWorker({
        db,
        coordinator,
        // The mesh's primary, re-read before each chunk (the worker serves nothing else).
        masterKeys: await masterKeysFor({ db, spec: config.masterKeys, dataDir: config.dataDir, logger, shutdown: interrupt.signal }),
        idleClaimMs: config.rewrapClaimIdleMs,
        signal: interrupt.signal,
        logger,
        onChunk: (r) => logger.info(r, "rewrap chunk done"),
      });
      logger.info("rewrap worker stopped");
      return EXIT.ok;
    } finally {
      interrupt.dispose();
      await coordinator.close();
      await db.close();
      await shutdownTelemetry().catch(() => undefined);
    }
  },
};
