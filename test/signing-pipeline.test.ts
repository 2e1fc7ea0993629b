import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { RejectionReason } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { checkInvariants } from "./support/invariants.js";
import { startInProcessMesh, type Backend, type InProcessMesh } from "./support/mesh.js";
import { unpackSignatures } from "../services/shared/records/blocks.js";

const codeOf = async (p: Promise<unknown>) => {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err).code;
  }
  return Code.Unknown;
};

describe.each<Backend>(["sqlite+memory", "mysql+redis"])("signing pipeline on %s", (backend) => {
  let mesh: InProcessMesh;
  beforeAll(async () => {
    mesh = await startInProcessMesh(backend);
  });
  afterAll(async () => {
    await mesh?.close();
  });

  it("signs every record exactly once with the six invariants holding", async () => {
    await mesh.collection.seedRecords({ count: 3000 });
    await mesh.keys.createKeyringKeys({ count: 10 });
    let last;
    for await (const res of mesh.executor.runJob({ spec: { batchSize: 100, concurrency: 4, leaseTtlMs: 5000 }, progressIntervalMs: 50 })) {
      last = res.progress;
    }
    expect(last?.state).toBe(JobState.SUCCEEDED);
    expect(Number(last?.signedRecords)).toBe(3000);
    expect(last?.batchSize).toBe(100);
    const report = await checkInvariants(mesh.db.primary, { jobId: last!.jobId, maxShortBatches: 0 });
    expect(report.violations.join("\n")).toBe("");
    expect(report.signatures).toBe(3000);
    expect(report.batches).toBe(30);
    expect(report.keysUsed).toBe(10);

    const rec = await mesh.collection.getRecord({ id: 1n });
    expect(rec.signature?.signature.length).toBe(64);
    const key = await mesh.keys.getKeyringKey({ keyId: rec.signature!.keyId });
    const verified = await mesh.signing.verify({ key: { case: "keyId", value: key.key!.keyId }, payload: rec.record!.payload, signature: rec.signature!.signature });
    expect(verified.valid).toBe(true);
    const tampered = Uint8Array.from(rec.record!.payload);
    tampered[0]! ^= 1;
    expect((await mesh.signing.verify({ key: { case: "publicKey", value: key.key!.publicKey }, payload: tampered, signature: rec.signature!.signature })).valid).toBe(false);

    const stats = await mesh.collection.getBatchStats({ jobId: last!.jobId });
    expect(Number(stats.duplicateSignatures)).toBe(0);
    expect(stats.batchSizes).toEqual([100]);
  });

  it("refuses bad input with clear codes and stores nothing", async () => {
    await mesh.collection.seedRecords({ count: 20 });
    const before = await mesh.collection.getProgress({});
    const run = (batchSize: number) => (async () => {
      for await (const _ of mesh.executor.runJob({ spec: { batchSize, concurrency: 1 } })) void _;
    })();
    expect(await codeOf(run(0))).toBe(Code.InvalidArgument);
    expect(await codeOf(run(1_000_000))).toBe(Code.InvalidArgument);
    expect(await codeOf(mesh.keys.getKeyringKey({ keyId: "k-missing" }))).toBe(Code.NotFound);
    // No lease, no signing: a batch without a lease token the key service issued is refused.
    expect(await codeOf(mesh.signing.signBatch({ batchId: "x", keyId: "k-missing", fence: 1n, records: { ids: [1n], payloadLengths: [8], payloads: new Uint8Array(8) } }))).toBe(Code.InvalidArgument);
    expect(await codeOf(mesh.signing.signBatch({ batchId: "x", keyId: "k-missing", fence: 1n, leaseId: "l", leaseToken: "t", records: { ids: [1n], payloadLengths: [8], payloads: new Uint8Array(8) } }))).toBe(Code.Aborted);

    const lease = (await mesh.keys.acquireKeyLease({ holder: "test", ttlMs: 5000, jobId: "bad-input" })).lease!;
    const claim = await mesh.collection.claimBatch({ claimant: "test", size: 5, claimTtlMs: 5000, jobId: "bad-input" });
    expect(claim.records?.ids.length).toBe(5);
    const creds = { keyId: lease.keyId, fence: lease.fence, leaseId: lease.leaseId, leaseToken: lease.leaseToken };
    const signed = await mesh.signing.signBatch({ batchId: "b1", ...creds, records: claim.records });
    // A forged fence, a made-up lease id, the largest int64 fence: refused by signing, not Internal.
    for (const over of [{ fence: lease.fence + 7n }, { leaseId: "made-up" }, { fence: 9223372036854775807n }]) {
      expect(await codeOf(mesh.signing.signBatch({ batchId: "b2", ...creds, ...over, records: { ids: [1n], payloadLengths: [1], payloads: new Uint8Array(1) } }))).toBe(Code.Aborted);
    }
    // The key service hands the wrapped key only to the lease id's holder.
    expect(await codeOf(mesh.keys.getWrappedSigningKey({ keyId: lease.keyId, fence: lease.fence, leaseId: "made-up" }))).toBe(Code.Aborted);
    expect((await mesh.keys.releaseKeyLease({ keyId: lease.keyId, fence: lease.fence, leaseId: "made-up", used: true })).released).toBe(false);
    // GetKeyringKey and ListKeyringKeys carry nothing that renews, releases or signs.
    const listed = JSON.stringify((await mesh.keys.listKeyringKeys({})).keys, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
    expect(listed).not.toContain(lease.leaseId);
    const unpacked = unpackSignatures(signed.signatures);
    const sigs = unpacked.ids.map((id, i) => ({ recordId: BigInt(id), signature: unpacked.signatures[i]! }));
    /** Packs signatures the way the executor sends them. */
    const block = (pairs: { recordId: bigint; signature: Uint8Array }[]) => ({ recordIds: pairs.map((p) => p.recordId), signatures: Buffer.concat(pairs.map((p) => p.signature)) });
    const commit = (over: object) =>
      mesh.collection.commitBatch({ claimId: claim.claimId, batchId: `c-${Math.random()}`, ...creds, jobId: "bad-input", signatures: block(sigs), ...over });
    // Ids longer than their columns: InvalidArgument, never truncated or Internal.
    for (const over of [{ claimId: "c".repeat(65) }, { batchId: "b".repeat(65) }, { keyId: "k".repeat(65) }, { jobId: "j".repeat(65) }]) {
      expect(await codeOf(commit(over))).toBe(Code.InvalidArgument);
    }
    expect(await codeOf(mesh.collection.claimBatch({ claimant: "test", size: 5, claimTtlMs: 5000, jobId: "j".repeat(65) }))).toBe(Code.InvalidArgument);
    // The largest int64 fence, or a lease id that is not the token's: STALE_FENCE, not Internal.
    for (const over of [{ fence: 9223372036854775807n }, { leaseId: "made-up" }, { leaseToken: "v1.forged" }]) {
      const refused = await commit(over);
      expect(refused.stored).toBe(0);
      expect(refused.rejections.every((r) => r.reason === RejectionReason.STALE_FENCE)).toBe(true);
    }
    // Wrong signature length: InvalidArgument, nothing stored.
    expect(await codeOf(commit({ signatures: { recordIds: [sigs[0]!.recordId], signatures: new Uint8Array(63) } }))).toBe(Code.InvalidArgument);
    // A stale or forged fence: every signature rejected as STALE_FENCE.
    const stale = await commit({ fence: lease.fence + 1n });
    expect(stale.stored).toBe(0);
    expect(stale.rejections.every((r) => r.reason === RejectionReason.STALE_FENCE)).toBe(true);
    // A signature that belongs to another record is caught by the spot check.
    const foreign = await commit({ signatures: block([{ recordId: sigs[1]!.recordId, signature: sigs[0]!.signature }]) });
    expect(foreign.stored).toBe(0);
    expect(foreign.rejections[0]?.reason).toBe(RejectionReason.INVALID_SIGNATURE);
    // A record of an earlier job, signed long ago, is refused before any signature is checked.
    const earlier = await commit({ signatures: block([{ recordId: 1n, signature: sigs[0]!.signature }]) });
    expect(earlier.rejections[0]?.reason).toBe(RejectionReason.ALREADY_SIGNED);
    // Records outside the claim: NOT_IN_CLAIM.
    const outside = await commit({ claimId: "not-a-claim" });
    expect(outside.rejections.every((r) => r.reason === RejectionReason.NOT_IN_CLAIM)).toBe(true);
    // Signatures by another key: the spot check refuses the batch.
    const other = await commit({ signatures: block(sigs.map((s, i) => ({ recordId: s.recordId, signature: sigs[(i + 1) % sigs.length]!.signature }))) });
    expect(other.stored).toBe(0);
    expect(other.rejections[0]?.reason).toBe(RejectionReason.INVALID_SIGNATURE);
    expect((await mesh.collection.getProgress({})).signed).toBe(before.signed);
    // The real commit goes through exactly once.
    const ok = await commit({});
    expect(ok.stored).toBe(5);
    const again = await commit({});
    expect(again.stored).toBe(0);
    expect(again.rejections.every((r) => r.reason === RejectionReason.ALREADY_SIGNED)).toBe(true);
    // One history row for the one commit that stored anything.
    const stats = await mesh.collection.getBatchStats({ jobId: "bad-input" });
    expect(Number(stats.batchesCommitted)).toBe(1);
    await mesh.keys.releaseKeyLease({ keyId: lease.keyId, leaseId: lease.leaseId, fence: lease.fence, used: true });
    // After release the fence is stale for signing too.
    expect(await codeOf(mesh.keys.renewKeyLease({ keyId: lease.keyId, leaseId: lease.leaseId, fence: lease.fence, ttlMs: 5000 }))).toBe(Code.Aborted);
  });
});
