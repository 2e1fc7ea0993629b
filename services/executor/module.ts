import { ExecutorService } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import type { ServiceModule } from "../shared/service-module.js";

/**
 * The executor service as the host runs it. Until its handlers are written, every RPC of
 * ExecutorService answers Unimplemented (connect-es fills in missing methods).
 */
export const executorModule: ServiceModule = {
  name: "executor",
  desc: ExecutorService,
  needs: { database: true, coordinator: true },
  async register(router) {
    router.service(ExecutorService, {});
  },
};
