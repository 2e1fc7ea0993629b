import { AuthService } from "../../gen/keymesh/auth/v1/auth_service_pb.js";
import type { ServiceModule } from "../shared/server/service-module.js";

/**
 * The auth service as the host runs it. Until its handlers are written, every RPC of
 * AuthService answers Unimplemented (connect-es fills in missing methods).
 */
export const authModule: ServiceModule = {
  name: "auth",
  desc: AuthService,
  needs: { database: true },
  async register(router) {
    router.service(AuthService, {});
  },
};
