import { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import type { ServiceModule } from "../shared/service-module.js";

/**
 * The collection service as the host runs it. Until its handlers are written, every RPC of
 * CollectionService answers Unimplemented (connect-es fills in missing methods).
 */
export const collectionModule: ServiceModule = {
  name: "collection",
  desc: CollectionService,
  needs: { database: true },
  async register(router) {
    router.service(CollectionService, {});
  },
};
