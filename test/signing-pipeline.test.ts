import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { RejectionReason } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { checkInvariants } from "./support/invariants.js";
import { startInProcessMesh, type Backend, type InProcessMesh } from "./support/mesh.js";

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
    expect(report.violations).toEqual([]);
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
    expect(await codeOf(mesh.signing.signBatch({ batchId: "x", keyId: "k-missing", fence: 1n, items: [{ recordId: 1n, payload: new Uint8Array(8) }] }))).toBe(Code.NotFound);

    const lease = (await mesh.keys.acquireKeyLease({ holder: "test", ttlMs: 5000, jobId: "bad-input" })).lease!;
    const claim = await mesh.collection.claimBatch({ claimant: "test", size: 5, claimTtlMs: 5000, jobId: "bad-input" });
    expect(claim.records.length).toBe(5);
    const signed = await mesh.signing.signBatch({ batchId: "b1", keyId: lease.keyId, fence: lease.fence, items: claim.records.map((r) => ({ recordId: r.id, payload: r.payload })) });
    // A forged fence (not issued) is refused by signing (no key material handed out).
    expect(await codeOf(mesh.signing.signBatch({ batchId: "b2", keyId: lease.keyId, fence: lease.fence + 7n, items: [{ recordId: 1n, payload: new Uint8Array(1) }] }))).toBe(Code.Aborted);
    const sigs = signed.signatures.map((s) => ({ recordId: s.recordId, signature: s.signature }));
    const commit = (over: object) =>
      mesh.collection.commitBatch({ claimId: claim.claimId, batchId: `c-${Math.random()}`, keyId: lease.keyId, fence: lease.fence, jobId: "bad-input", signatures: sigs, startedAtMs: BigInt(Date.now()), ...over });
    // Wrong signature length: InvalidArgument, nothing stored.
    expect(await codeOf(commit({ signatures: [{ recordId: sigs[0]!.recordId, signature: new Uint8Array(63) }] }))).toBe(Code.InvalidArgument);
    // A stale or forged fence: every signature rejected as STALE_FENCE.
    const stale = await commit({ fence: lease.fence + 1n });
    expect(stale.stored).toBe(0);
    expect(stale.rejections.every((r) => r.reason === RejectionReason.STALE_FENCE)).toBe(true);
    // A signature that belongs to another record is caught by the spot check.
    const foreign = await commit({ signatures: [{ recordId: 1n, signature: sigs[0]!.signature }] });
    expect(foreign.stored).toBe(0);
    expect(foreign.rejections[0]?.reason).toBe(RejectionReason.INVALID_SIGNATURE);
    // Records outside the claim: NOT_IN_CLAIM.
    const outside = await commit({ claimId: "not-a-claim" });
    expect(outside.rejections.every((r) => r.reason === RejectionReason.NOT_IN_CLAIM)).toBe(true);
    // Signatures by another key: the spot check refuses the batch.
    const other = await commit({ signatures: sigs.map((s, i) => ({ recordId: s.recordId, signature: sigs[(i + 1) % sigs.length]!.signature })) });
    expect(other.stored).toBe(0);
    expect(other.rejections[0]?.reason).toBe(RejectionReason.INVALID_SIGNATURE);
    expect((await mesh.collection.getProgress({})).signed).toBe(before.signed);
    // The real commit goes through exactly once.
    const ok = await commit({});
    expect(ok.stored).toBe(5);
    const again = await commit({});
    expect(again.stored).toBe(0);
    expect(again.rejections.every((r) => r.reason === RejectionReason.ALREADY_SIGNED)).toBe(true);
    await mesh.keys.releaseKeyLease({ keyId: lease.keyId, leaseId: lease.leaseId, fence: lease.fence, used: true });
    // After release the fence is stale for signing too.
    expect(await codeOf(mesh.keys.renewKeyLease({ keyId: lease.keyId, leaseId: lease.leaseId, fence: lease.fence, ttlMs: 5000 }))).toBe(Code.Aborted);
  });
});
