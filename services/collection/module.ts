import { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import type { ServiceModule } from "../shared/server/service-module.js";
import { reportSigningSeries } from "../shared/telemetry/metrics-signing.js";
import { collectionMigrations } from "./migrations/index.js";
import { createCollectionHandler } from "./handler.js";
import { createLeaseCheck } from "./lease-check.js";
import { createCollectionStore } from "./store.js";

/** CollectionService as the host runs it. */
export const collectionModule: ServiceModule = {
  name: "collection",
  desc: CollectionService,
  migrations: collectionMigrations,
  needs: { database: true },
  async register(router, ctx) {
    reportSigningSeries("collection");
    router.service(CollectionService, createCollectionHandler({ store: createCollectionStore(ctx.db), leases: createLeaseCheck(ctx.clients.keys) }));
  },
};
