import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { loadMasterKeyring } from "../shared/crypto/master-keys.js";
import type { ServiceModule } from "../shared/service-module.js";
import { createKeysHandler } from "./handler.js";
import { createKeyring } from "./keyring.js";
import { createKeyringStore } from "./keyring-store.js";
import { createUserKeyStore } from "./user-key-store.js";
import { createUserKeys } from "./user-keys.js";
import { createUserKeysHandler } from "./user-keys-handler.js";

/** KeyManagementService as the host runs it. */
export const keysModule: ServiceModule = {
  name: "keys",
  desc: KeyManagementService,
  needs: { database: true, coordinator: true },
  async register(router, ctx) {
    const ring = loadMasterKeyring({ spec: ctx.config.masterKeys, dataDir: ctx.config.dataDir });
    const store = createKeyringStore(ctx.db);
    const keyring = createKeyring({ store, coordinator: ctx.coordinator, masterKeys: () => ring });
    const userKeys = createUserKeys({ store: createUserKeyStore(ctx.db), ring: () => ring });
    router.service(KeyManagementService, {
      ...createKeysHandler({ keyring, store, masterKeys: () => ring }),
      ...createUserKeysHandler(userKeys),
    });
    return { close: () => keyring.close() };
  },
};
