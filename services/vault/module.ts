import { VaultService } from "../../gen/keymesh/vault/v1/vault_service_pb.js";
import type { ServiceModule } from "../shared/server/service-module.js";

/**
 * The vault service as the host runs it. Until its handlers are written, every RPC of
 * VaultService answers Unimplemented (connect-es fills in missing methods).
 */
export const vaultModule: ServiceModule = {
  name: "vault",
  desc: VaultService,
  needs: { database: true },
  async register(router) {
    router.service(VaultService, {});
  },
};
