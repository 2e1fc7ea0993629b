import { SigningService } from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import type { ServiceModule } from "../shared/service-module.js";

/**
 * The signing service as the host runs it. Until its handlers are written, every RPC of
 * SigningService answers Unimplemented (connect-es fills in missing methods).
 */
export const signingModule: ServiceModule = {
  name: "signing",
  desc: SigningService,
  needs: {},
  async register(router) {
    router.service(SigningService, {});
  },
};
