/**
 * The request streams between mesh services: the key service's LeaseStream and Collection's
 * ClaimStream carry the unary lease and claim calls as messages on one long-lived stream.
 * Each request must be checked, decided and audited exactly as its unary RPC, fail alone
 * (the stream and the requests after it go on), and a client must see the same codes and
 * messages as over the unary RPC. Real services on the embedded database.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { AuditOutcome } from "../gen/keymesh/vault/v1/vault_pb.js";
import { VaultService } from "../gen/keymesh/vault/v1/vault_service_pb.js";
import { collectionModule } from "../services/collection/module.js";
import { createLeaseStream } from "../services/executor/lease-stream.js";
import { keysModule } from "../services/keys/module.js";
import { createRequestStream } from "../services/shared/streams/request-stream.js";
import { createClaimStream } from "../services/signing/claim-stream.js";
import { vaultModule } from "../services/vault/module.js";
import { hostCredentials, startTestHost, type TestHost } from "./support/host.js";

let server: TestHost;
beforeAll(async () => {
  server = await startTestHost({ services: [keysModule, collectionModule, vaultModule] });
}, 60_000);
afterAll(async () => {
  await server?.close();
});

const transport = () => createGrpcTransport({ baseUrl: server.url, interceptors: [hostCredentials(server)] });
const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => ConnectError.from(e));

describe("LeaseStream", () => {
  it("answers each request as its unary RPC, refusals included, and keeps going after one fails", async () => {
    const keys = createClient(KeyManagementService, transport());
    const leases = createLeaseStream(keys);
    try {
      // An empty keyring: refused with the unary RPC's code and message, and audited under its name.
      const unary = await failure(keys.acquireKeyLease({ holder: "e-1", ttlMs: 5000, jobId: "job-unary" }));
      const streamed = await failure(leases.acquireKeyLease({ holder: "e-1", ttlMs: 5000, jobId: "job-stream" }));
      expect(streamed?.code).toBe(Code.ResourceExhausted);
      expect(streamed?.rawMessage).toBe(unary?.rawMessage);
      const audit = createClient(VaultService, transport());
      const refusals = (await audit.listAuditEvents({ objectId: "job-stream" })).events;
      expect(refusals.map((e) => [e.method, e.outcome])).toEqual([["keymesh.keys.v1.KeyManagementService/AcquireKeyLease", AuditOutcome.DENIED]]);

      // A request that breaks its rules fails alone.
      const bad = await failure(leases.acquireKeyLease({ holder: "", ttlMs: 5000, jobId: "job-stream" }));
      expect(bad?.code).toBe(Code.InvalidArgument);
      expect(bad?.rawMessage).toMatch(/^holder: /);

      await keys.createKeyringKeys({ count: 2 });
      const { lease } = await leases.acquireKeyLease({ holder: "e-1", ttlMs: 5000, jobId: "job-stream" });
      expect(lease?.leaseId).toMatch(/.{20,}/);
      const renewed = await leases.renewKeyLease({ keyId: lease!.keyId, leaseId: lease!.leaseId, fence: lease!.fence, ttlMs: 5000 });
      expect(renewed.leaseToken).not.toBe("");
      // A made-up lease id is refused, over the stream as over the unary RPC.
      const forged = await failure(leases.renewKeyLease({ keyId: lease!.keyId, leaseId: "not-the-lease", fence: lease!.fence, ttlMs: 5000 }));
      expect(forged?.code).toBe(Code.Aborted);
      const rotated = await leases.rotateKeyLease({ keyId: lease!.keyId, leaseId: lease!.leaseId, fence: lease!.fence, used: true, holder: "e-1", ttlMs: 5000, jobId: "job-stream" });
      expect(rotated.released).toBe(true);
      expect(rotated.lease?.keyId).not.toBe(lease!.keyId);
      const next = rotated.lease!;
      expect((await leases.releaseKeyLease({ keyId: next.keyId, leaseId: next.leaseId, fence: next.fence, used: false })).released).toBe(true);
      // Released twice: nothing to release the second time.
      expect((await leases.releaseKeyLease({ keyId: next.keyId, leaseId: next.leaseId, fence: next.fence, used: false })).released).toBe(false);
    } finally {
      leases.close();
    }
  });
});

describe("ClaimStream", () => {
  it("claims, releases and refuses as the unary RPCs do, one request failing alone", async () => {
    const collection = createClient(CollectionService, transport());
    const claims = createClaimStream(collection);
    try {
      await collection.seedRecords({ count: 10 });
      const bad = await failure(claims.claimBatch({ claimant: "e-1", size: 0, claimTtlMs: 5000, jobId: "j" }));
      expect(bad?.code).toBe(Code.InvalidArgument);
      expect(bad?.rawMessage).toMatch(/^size: /);

      const claim = await claims.claimBatch({ claimant: "e-1", size: 4, claimTtlMs: 5000, jobId: "j" });
      expect(claim.records?.ids).toHaveLength(4);
      expect((await collection.getProgress({})).claimed).toBe(4n);
      // A commit under a lease token nobody issued stores nothing (as CommitBatch answers it).
      const forged = await claims.commitBatch({
        claimId: claim.claimId,
        batchId: "b-forged",
        keyId: "k-1",
        fence: 1n,
        jobId: "j",
        leaseId: "lease",
        leaseToken: "not-a-token",
        signatures: { recordIds: claim.records!.ids, signatures: new Uint8Array(64 * 4) },
      });
      expect(forged.stored).toBe(0);
      expect(forged.rejections.map((r) => r.recordId)).toEqual(claim.records!.ids);
      // A commit whose signatures do not match its ids breaks the block's rule.
      const mismatched = await failure(
        claims.commitBatch({ claimId: claim.claimId, batchId: "b-2", keyId: "k-1", fence: 1n, jobId: "j", leaseId: "l", leaseToken: "t", signatures: { recordIds: [1n], signatures: new Uint8Array(8) } }),
      );
      expect(mismatched?.code).toBe(Code.InvalidArgument);
      expect((await claims.releaseClaim({ claimId: claim.claimId })).released).toBe(4);
      expect((await collection.getProgress({})).claimed).toBe(0n);
    } finally {
      claims.close();
    }
  });
});

describe("a request stream's client", () => {
  it("fails the waiting calls with Unavailable when the stream breaks, and opens a new stream for the next call", async () => {
    let opened = 0;
    type Req = { case: "ping"; value: string };
    type Ans = { case: "ping"; value: string } | { case: "error"; value: { code: string; message: string } } | { case: undefined; value?: undefined };
    const stream = createRequestStream<Req, Ans>("the test stream", (requests) => {
      opened++;
      const round = opened;
      return (async function* () {
        for await (const r of requests) {
          // The first stream breaks on its first request; the second answers.
          if (round === 1) throw new ConnectError("connection reset", Code.Unavailable);
          yield { requestId: r.requestId, response: r.request.value === "fail" ? { case: "error" as const, value: { code: "permission_denied", message: "no" } } : { case: "ping" as const, value: r.request.value } };
        }
      })();
    });
    const broken = await failure(stream.call({ case: "ping", value: "a" }, "ping"));
    expect(broken?.code).toBe(Code.Unavailable);
    expect((await stream.call({ case: "ping", value: "b" }, "ping")).value).toBe("b");
    const refused = await failure(stream.call({ case: "ping", value: "fail" }, "ping"));
    expect([refused?.code, refused?.rawMessage]).toEqual([Code.PermissionDenied, "no"]);
    expect(opened).toBe(2);
    stream.close();
  });
});
