import { SigningService } from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { createLeaseTokens } from "../shared/crypto/lease-token.js";
import { loadMasterKeyring } from "../shared/crypto/master-keys.js";
import type { ServiceModule } from "../shared/server/service-module.js";
import { createSigningHandler } from "./handler.js";
import { createSignPool } from "./sign-pool.js";
import { createSigner } from "./signer.js";

/**
 * SigningService as the host runs it. It holds the master keys (to open keyring private
 * keys) but no database: sealed keys come from the key service, under a current lease only.
 */
export const signingModule: ServiceModule = {
  name: "signing",
  desc: SigningService,
  needs: {},
  async register(router, ctx) {
    const load = () => loadMasterKeyring({ spec: ctx.config.masterKeys, dataDir: ctx.config.dataDir, logger: ctx.logger });
    let ring = load();
    let loadedAt = Date.now();
    // Development keys live in a file that `RotateMasterKey` extends: re-read it now and then,
    // so keyring keys rewrapped under a new version still open here. Configured keys
    // (KEYMESH_MASTER_KEYS) change only with a restart.
    const masterKeys = () => {
      if (ctx.config.masterKeys === undefined && Date.now() - loadedAt > 2_000) {
        ring = load();
        loadedAt = Date.now();
      }
      return ring;
    };
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
    router.service(SigningService, createSigningHandler({ signer, publicKeyOf }));
    return {
      close: async () => {
        signer.clear();
        await pool.close();
      },
    };
  },
};
