import { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import type { ServiceModule } from "../shared/service-module.js";

/**
 * The keys service as the host runs it. Until its handlers are written, every RPC of
 * KeyManagementService answers Unimplemented (connect-es fills in missing methods).
 */
export const keysModule: ServiceModule = {
  name: "keys",
  desc: KeyManagementService,
  needs: { database: true, coordinator: true },
  async register(router) {
    router.service(KeyManagementService, {});
  },
};
