import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { KeyManagementService } from "../../gen/keymesh/keys/v1/key_management_service_pb.js";
import { MasterKeyVersionStatusSchema, type MasterKeyVersionStatus } from "../../gen/keymesh/keys/v1/keys_pb.js";
import type { JobQueue } from "../shared/coordination/types.js";
import { enqueueRewrapChunks } from "../shared/crypto/rotation/rewrap-chunks.js";
import type { SealedRowSet } from "../shared/crypto/rotation/sealed-row-set.js";
import { InvalidInputError, mapErrors } from "../shared/errors.js";
import type { MasterKeySource } from "./master-key-source.js";

/** Dependencies of the master-key RPCs of KeyManagementService. */
export interface RotationHandlerDeps {
  readonly masterKeys: MasterKeySource;
  readonly sets: readonly SealedRowSet[];
  readonly queue: JobQueue;
}

/**
 * RotateMasterKey, GetMasterKeyStatus, RewrapPrivateKeys and RetireMasterKey (access: admin).
 * Rotation and rewrap only enqueue: the rewrap workers move the keys, and the status shows
 * how many are left per version.
 */
export function createRotationHandler(deps: RotationHandlerDeps): Partial<ServiceImpl<typeof KeyManagementService>> {
  const { masterKeys, sets, queue } = deps;

  const counts = async (): Promise<Map<number, number>> => {
    const total = new Map<number, number>();
    for (const set of sets) for (const [v, n] of await set.countByVersion()) total.set(v, (total.get(v) ?? 0) + n);
    return total;
  };

  const status = async (): Promise<MasterKeyVersionStatus[]> => {
    const rows = await counts();
    const ring = masterKeys.ring();
    const versions = new Set([...ring.versions(), ...rows.keys()]);
    return [...versions]
      .sort((a, b) => a - b)
      .map((version) =>
        create(MasterKeyVersionStatusSchema, {
          version,
          primary: version === ring.primaryVersion,
          retired: !ring.versions().includes(version),
          rowCount: BigInt(rows.get(version) ?? 0),
        }),
      );
  };

  const enqueue = async () => (await enqueueRewrapChunks({ sets, queue, primary: masterKeys.ring().primaryVersion })).rows;

  return {
    rotateMasterKey: mapErrors(async () => {
      const { primary } = await masterKeys.rotate();
      return { primaryVersion: primary, enqueued: BigInt(await enqueue()) };
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
      await masterKeys.retire(req.version, async () => (await counts()).get(req.version) ?? 0);
      return { versions: await status() };
    }),
  };
}
