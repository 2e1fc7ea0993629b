import { SigningService } from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { createLeaseTokens } from "../shared/crypto/lease-token.js";
import { masterKeyMaterial } from "../shared/crypto/rotation/master-key-manager.js";
import type { ServiceModule } from "../shared/server/service-module.js";
import { createSigningHandler, STREAM_MAX_IN_FLIGHT } from "./handler.js";
import { createClaimStream } from "./claim-stream.js";
import { createRunBatches } from "./run-batches.js";
import { createSignPool } from "./sign-pool.js";
import { createSigner } from "./signer.js";

/**
 * SigningService as the host runs it. It holds the master keys (to open keyring private
 * keys) but no database: sealed keys come from the key service, under a current lease only,
 * and the records it signs for the executor are claimed from and committed to Collection.
 * It never seals, so the mesh's primary does not matter here; a key or lease token under a
 * version generated after this process started is picked up by the key material itself (see
 * `masterKeyMaterial`).
 */
export const signingModule: ServiceModule = {
  name: "signing",
  desc: SigningService,
  needs: {},
  async register(router, ctx) {
    const masterKeys = masterKeyMaterial({ spec: ctx.config.masterKeys, dataDir: ctx.config.dataDir, logger: ctx.logger }).ring;
    const keys = ctx.clients.keys;
    // Started with the service, stopped by close(): Ed25519 runs on these threads, not the event loop.
    const pool = createSignPool({ threads: ctx.config.signingThreads, logger: ctx.logger });
    const signer = createSigner({
      pool,
      masterKeys,
      tokens: createLeaseTokens(masterKeys),
      source: async (keyId, fence, leaseId) => {
        const res = await keys.getWrappedSigningKey({ keyId, fence, leaseId });
        return { keyId: res.keyId, wrapped: res.wrappedPrivateKey };
      },
    });
    const publicKeyOf = async (keyId: string) => (await keys.getKeyringKey({ keyId })).key!.publicKey;
    // The executor's data path: claims and commits go straight to Collection (run-batches.ts).
    const claims = createClaimStream(ctx.clients.collection);
    const runBatches = createRunBatches({ signer, collection: claims, maxInFlight: STREAM_MAX_IN_FLIGHT });
    router.service(SigningService, createSigningHandler({ signer, publicKeyOf, runBatches }));
    return {
      close: async () => {
        claims.close();
        signer.clear();
        await pool.close();
      },
    };
  },
};
