import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { auditLogFor, loadAuditKey } from "../shared/audit/index.js";
import { createLeaseTokens } from "../shared/crypto/lease-token.js";
import { loadMasterKeyring } from "../shared/crypto/master-keys.js";
import type { ServiceModule } from "../shared/server/service-module.js";
import { reportSigningSeries } from "../shared/telemetry/metrics-signing.js";
import { keysMigrations } from "./migrations/index.js";
import { createKeysHandler } from "./handler.js";
import { createKeyring } from "./keyring.js";
import { createKeyringStore } from "./keyring-store.js";

/** KeyManagementService as the host runs it. */
export const keysModule: ServiceModule = {
  name: "keys",
  desc: KeyManagementService,
  migrations: keysMigrations,
  needs: { database: true, coordinator: true },
  async register(router, ctx) {
    reportSigningSeries("keys");
    const ring = loadMasterKeyring({ spec: ctx.config.masterKeys, dataDir: ctx.config.dataDir, logger: ctx.logger });
    const store = createKeyringStore(ctx.db);
    const keyring = createKeyring({ store, coordinator: ctx.coordinator, masterKeys: () => ring, tokens: createLeaseTokens(() => ring) });
    const audit = auditLogFor(ctx.db, await loadAuditKey({ spec: ctx.config.auditKey, db: ctx.db }));
    router.service(KeyManagementService, createKeysHandler({ keyring, store, masterKeys: () => ring, audit }));
    return {
      async close() {
        await keyring.close();
        await audit.flush();
      },
    };
  },
};
