import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { MasterKeyVersionStatusSchema, type MasterKeyVersionStatus } from "../../gen/keymesh/keys/v1/keys_pb.js";
import type { JobQueue } from "../shared/coordination/types.js";
import { enqueueRewrapChunks, enqueueSettledScan } from "../shared/crypto/rotation/rewrap-chunks.js";
import type { SealedRowSet } from "../shared/crypto/rotation/sealed-row-set.js";
import { InvalidInputError, mapErrors } from "../shared/errors.js";
import type { MasterKeyManager } from "../shared/crypto/rotation/master-key-manager.js";

/** Dependencies of the master-key RPCs of KeyManagementService. */
export interface RotationHandlerDeps {
  readonly masterKeys: MasterKeyManager;
  readonly sets: readonly SealedRowSet[];
  readonly queue: JobQueue;
  /** The vault's rewrap queue: a rotation here moves the vault's rows too (see rewrap.ts). */
  readonly vaultQueue: JobQueue;
}

/**
 * RotateMasterKey, GetMasterKeyStatus, RewrapPrivateKeys and RetireMasterKey (access: admin).
 * Rotation and rewrap only enqueue: the rewrap workers move the keys, and the status shows
 * how many are left per version. The master-key state is the mesh-wide one the vault's RPCs
 * share, so a rotation through either service moves the primary for both, and each queues
 * the other's rewrap as well.
 */
export function createRotationHandler(deps: RotationHandlerDeps): Partial<ServiceImpl<typeof KeyManagementService>> {
  const { masterKeys, sets, queue } = deps;

  /** Private keys per version: from the replica for status, the primary (`fresh`) for retiring. */
  const counts = async (fresh = false): Promise<Map<number, number>> => {
    const total = new Map<number, number>();
    for (const set of sets) for (const [v, n] of await set.countByVersion(fresh)) total.set(v, (total.get(v) ?? 0) + n);
    return total;
  };

  const status = async (): Promise<MasterKeyVersionStatus[]> => {
    const [rows, states] = await Promise.all([counts(), masterKeys.states()]);
    const ring = masterKeys.ring();
    const versions = new Set([...states.keys(), ...rows.keys()]);
    return [...versions]
      .sort((a, b) => a - b)
      .map((version) =>
        create(MasterKeyVersionStatusSchema, {
          version,
          primary: version === ring.primaryVersion,
          retired: states.get(version) === "retired",
          rowCount: BigInt(rows.get(version) ?? 0),
        }),
      );
  };

  const enqueue = async () => (await enqueueRewrapChunks({ sets, queue, primary: masterKeys.ring().primaryVersion })).rows;

  return {
    rotateMasterKey: mapErrors(async () => {
      const { primary } = await masterKeys.rotate();
      // Best effort, like the vault's own rotation: a vault process also resumes at start.
      await deps.vaultQueue.enqueue({ reason: "rotate", primary: String(primary) }).catch(() => undefined);
      const enqueued = await enqueue();
      // Keys sealed under the old version by a process that has not re-read the primary yet.
      await enqueueSettledScan(queue, "rotate");
      return { primaryVersion: primary, enqueued: BigInt(enqueued) };
    }),

    getMasterKeyStatus: mapErrors(async () => {
      await masterKeys.refresh();
      return { versions: await status() };
    }),

    rewrapPrivateKeys: mapErrors(async () => {
      await masterKeys.refresh();
      return { enqueued: BigInt(await enqueue()) };
    }),

    retireMasterKey: mapErrors(async (req) => {
      if (req.version === 0) throw new InvalidInputError("version must be a master-key version (1 or more)");
      await masterKeys.retire(req.version, async () => (await counts(true)).get(req.version) ?? 0, {
        what: "private keys (keyring and users' keys; GetMasterKeyStatus shows them per version)",
        how: "call RewrapPrivateKeys, wait until GetMasterKeyStatus shows 0 for it, then retire",
      });
      return { versions: await status() };
    }),
  };
}
