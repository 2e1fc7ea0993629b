import { hostname } from "node:os";
import { VaultService } from "../../gen/keymesh/vault/v1/vault_service_pb.js";
import { auditLogFor, loadAuditKey, runAuditRetention } from "../shared/audit/index.js";
import { masterKeysFor } from "../shared/crypto/rotation/master-key-manager.js";
import { REWRAP_QUEUE, runRewrapWorker } from "../shared/crypto/rotation/rewrap.js";
import { KEY_REWRAP_QUEUE } from "../shared/crypto/rotation/rewrap-chunks.js";
import { createSealedRowSets } from "../shared/crypto/rotation/sealed-row-set.js";
import type { ServiceModule } from "../shared/server/service-module.js";
import { createVaultHandler } from "./handler.js";
import { vaultMigrations } from "./migrations/index.js";
import { createSecretVersionsSet } from "./sealed-set.js";
import { createVaultStore } from "./store.js";
import { createVault } from "./vault.js";

/**
 * VaultService as the host runs it: secrets on the database, the audit trail with its
 * retention purge, the mesh's master-key state and the background rewrap worker.
 */
export const vaultModule: ServiceModule = {
  name: "vault",
  desc: VaultService,
  needs: { database: true, coordinator: true },
  migrations: vaultMigrations,
  async register(router, ctx) {
    const { config, logger } = ctx;
    const masterKeys = await masterKeysFor({ db: ctx.db, spec: config.masterKeys, dataDir: config.dataDir, logger, shutdown: ctx.shutdown });
    const audit = auditLogFor(ctx.db, await loadAuditKey({ spec: config.auditKey, db: ctx.db }));
    const sets = createSealedRowSets();
    sets.register(createSecretVersionsSet(ctx.db));
    const vault = createVault({ store: createVaultStore(ctx.db), ring: masterKeys.ring });
    const rewrapQueue = ctx.coordinator.queues.queue(REWRAP_QUEUE);
    router.service(VaultService, createVaultHandler({ vault, audit, masterKeys, sets, rewrapQueue, keyRewrapQueue: ctx.coordinator.queues.queue(KEY_REWRAP_QUEUE) }));

    const background = [
      runAuditRetention({ audit, days: config.auditRetentionDays, signal: ctx.shutdown, logger }),
      runRewrapWorker({
        queue: rewrapQueue,
        sets: () => sets.list(),
        ring: masterKeys.ring,
        refresh: masterKeys.refresh,
        consumer: `${hostname()}-${process.pid}`,
        signal: ctx.shutdown,
        logger,
      }),
    ].map((p) => p.catch((err: unknown) => logger.error({ err: String(err) }, "vault background work stopped")));
    return {
      async close() {
        await Promise.all(background);
        await audit.flush();
      },
    };
  },
};
