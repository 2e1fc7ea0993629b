import { Code } from "@connectrpc/connect";
import type { MasterKeyring } from "../shared/crypto/envelope.js";
import { addDevMasterKey, loadMasterKeyring, type MasterKeyLogger } from "../shared/crypto/master-keys.js";
import { DomainError } from "../shared/errors.js";

/**
 * Where the keys service gets its master keys and which version is primary. Its shape is
 * that of the mesh-wide master-key manager (services/shared/crypto/rotation), which keeps
 * the primary in the database so every process agrees; until that is wired in, this
 * implementation takes it from configuration: the highest configured version is primary.
 */
export interface MasterKeySource {
  ring(): MasterKeyring;
  /** Re-reads the keys (the development key file may have gained a version). */
  refresh(): Promise<void>;
  /** Makes a newer version primary; returns the previous and new primary versions. */
  rotate(): Promise<{ previous: number; primary: number }>;
  /** Retires `version` once `rowsUsing()` reports zero rows; FailedPrecondition otherwise. */
  retire(version: number, rowsUsing: () => Promise<number>): Promise<void>;
}

const precondition = (message: string) => new DomainError(Code.FailedPrecondition, message);

/** Master keys from KEYMESH_MASTER_KEYS, or the development key file in `dataDir`. */
export function createConfiguredMasterKeys(opts: { spec: string | undefined; dataDir: string; logger?: MasterKeyLogger }): MasterKeySource {
  const load = () =>
    loadMasterKeyring({
      ...(opts.spec === undefined ? {} : { spec: opts.spec }),
      dataDir: opts.dataDir,
      ...(opts.logger === undefined ? {} : { logger: opts.logger }),
    });
  let ring = load();
  return {
    ring: () => ring,
    async refresh() {
      if (opts.spec === undefined) ring = load();
    },
    async rotate() {
      const previous = ring.primaryVersion;
      if (opts.spec !== undefined) {
        throw precondition(
          `master key version ${previous} is the newest in KEYMESH_MASTER_KEYS: add version ${previous + 1} to every keys and signing process, restart them, then run RewrapPrivateKeys`,
        );
      }
      addDevMasterKey(opts.dataDir);
      ring = load();
      return { previous, primary: ring.primaryVersion };
    },
    async retire(version, rowsUsing) {
      if (version === ring.primaryVersion) throw precondition(`master key version ${version} is primary; rotate first`);
      if (!ring.versions().includes(version)) throw precondition(`master key version ${version} is not configured`);
      const rows = await rowsUsing();
      if (rows > 0) throw precondition(`master key version ${version} still encrypts ${rows} private keys; run the rewrap first`);
      throw precondition(
        `no private key uses master key version ${version} any more: retire it by removing it from ${opts.spec === undefined ? "data/master-keys.json" : "KEYMESH_MASTER_KEYS"} on every process`,
      );
    },
  };
}
