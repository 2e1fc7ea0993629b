import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { auditLogFor, loadAuditKey } from "../shared/audit/index.js";
import { createLeaseTokens } from "../shared/crypto/lease-token.js";
import { masterKeysFor } from "../shared/crypto/rotation/master-key-manager.js";
import { REWRAP_QUEUE } from "../shared/crypto/rotation/rewrap.js";
import { KEY_REWRAP_QUEUE } from "../shared/crypto/rotation/rewrap-chunks.js";
import type { ServiceModule } from "../shared/server/service-module.js";
import { reportSigningSeries } from "../shared/telemetry/metrics-signing.js";
import { keysMigrations } from "./migrations/index.js";
import { createKeysHandler } from "./handler.js";
import { createKeyring } from "./keyring.js";
import { createKeyringStore } from "./keyring-store.js";
import { keysSealedSets, startKeyRewrapWorker } from "./rewrap.js";
import { createRotationHandler } from "./rotation-handler.js";
import { createUserKeyStore } from "./user-key-store.js";
import { createUserKeys } from "./user-keys.js";
import { createUserKeysHandler } from "./user-keys-handler.js";

/**
 * KeyManagementService as the host runs it: the signing keyring, users' key pairs, master-key
 * rotation, and one private-key rewrap worker per process (a member of the rewrap consumer
 * group on Redis, or of the in-process queue in the embedded default).
 */
export const keysModule: ServiceModule = {
  name: "keys",
  desc: KeyManagementService,
  migrations: keysMigrations,
  needs: { database: true, coordinator: true },
  async register(router, ctx) {
    reportSigningSeries("keys");
    // The mesh-wide master-key state, shared with the vault: a rotation through either moves
    // the primary for both, and this process follows it.
    const masterKeys = await masterKeysFor({ db: ctx.db, spec: ctx.config.masterKeys, dataDir: ctx.config.dataDir, logger: ctx.logger, shutdown: ctx.shutdown });
    const store = createKeyringStore(ctx.db);
    const keyring = createKeyring({ store, coordinator: ctx.coordinator, masterKeys: masterKeys.ring, tokens: createLeaseTokens(masterKeys.ring) });
    const audit = auditLogFor(ctx.db, await loadAuditKey({ spec: ctx.config.auditKey, db: ctx.db }));
    const userKeys = createUserKeys({ store: createUserKeyStore(ctx.db), ring: masterKeys.ring });
    const rotation = createRotationHandler({
      masterKeys,
      sets: keysSealedSets(ctx.db),
      queue: ctx.coordinator.queues.queue(KEY_REWRAP_QUEUE),
      vaultQueue: ctx.coordinator.queues.queue(REWRAP_QUEUE),
    });
    router.service(KeyManagementService, {
      ...createKeysHandler({ keyring, store, masterKeys: masterKeys.ring, audit }),
      ...createUserKeysHandler(userKeys),
      ...rotation,
    });
    const worker = startKeyRewrapWorker({
      db: ctx.db,
      coordinator: ctx.coordinator,
      masterKeys,
      idleClaimMs: ctx.config.rewrapClaimIdleMs,
      signal: ctx.shutdown,
      logger: ctx.logger,
    }).catch((err: unknown) => ctx.logger.error({ err: String(err) }, "the private-key rewrap worker stopped"));
    return {
      async close() {
        await worker;
        await keyring.close();
        await audit.flush();
      },
    };
  },
};
