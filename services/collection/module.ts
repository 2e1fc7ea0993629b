import { CollectionService } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { createLeaseTokens } from "../shared/crypto/lease-token.js";
import { masterKeyMaterial } from "../shared/crypto/rotation/master-key-manager.js";
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
    // The master keys serve only to check lease tokens here (see lease-token.ts); a token
    // minted under a version generated after this process started is picked up on first sight.
    const leases = createLeaseCheck(ctx.clients.keys, createLeaseTokens(masterKeyMaterial({ spec: ctx.config.masterKeys, dataDir: ctx.config.dataDir }).ring));
    router.service(CollectionService, createCollectionHandler({ store: createCollectionStore(ctx.db), leases }));
  },
};
