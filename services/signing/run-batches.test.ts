import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { describe, expect, it, vi } from "vitest";
import { ClaimBatchResponseSchema, CommitBatchResponseSchema, type CommitBatchRequest } from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { RunBatchesRequestSchema, type RunBatchesResponse } from "../../gen/keymesh/signing/v1/signing_service_pb.js";
import { packRecords } from "../shared/records/blocks.js";
import { createRunBatches } from "./run-batches.js";

type Request = MessageInitShape<typeof RunBatchesRequestSchema>;

const batch = (batchId: string, over: Partial<Record<string, unknown>> = {}): Request => ({
  message: {
    case: "batch",
    value: { batchId, keyId: "k-1", fence: 7n, leaseId: "lease", leaseToken: "token-1", claimant: "executor-1", jobId: "job-1", size: 3, claimTtlMs: 5000, ...over },
  },
});

/**
 * RunBatches against a collection and a signer in memory: each claim hands out three records,
 * every signature the signer makes waits for `release()`, and what reached the collection is
 * recorded.
 */
function harness(opts: { records?: number; signerFails?: ConnectError } = {}) {
  const claims: string[] = [];
  const commits: CommitBatchRequest[] = [];
  const released: string[] = [];
  const signedWith: string[] = [];
  const gates: (() => void)[] = [];
  let nextId = 1;
  const collection = {
    claimBatch: async () => {
      const claimId = `claim-${claims.length + 1}`;
      claims.push(claimId);
      const records = Array.from({ length: opts.records ?? 3 }, () => ({ id: nextId++, payload: Buffer.from("payload") }));
      return create(ClaimBatchResponseSchema, { claimId, records: packRecords(records) });
    },
    commitBatch: async (req: CommitBatchRequest) => {
      commits.push(req);
      return create(CommitBatchResponseSchema, { stored: req.signatures!.recordIds.length });
    },
    releaseClaim: async (req: { claimId: string }) => {
      released.push(req.claimId);
      return { released: true } as never;
    },
  };
  const signer = {
    signBatch: async (lease: { leaseToken: string }, payloads: readonly Uint8Array[]) => {
      signedWith.push(lease.leaseToken);
      await new Promise<void>((resolve) => gates.push(resolve));
      if (opts.signerFails) throw opts.signerFails;
      return Buffer.alloc(64 * payloads.length, 1);
    },
  };
  const requests = createWritableIterable<Request>();
  const stream = new AbortController();
  const replies = createRunBatches({ signer, collection: collection as never, maxInFlight: 4 })(
    (async function* () {
      for await (const r of requests) yield create(RunBatchesRequestSchema, r);
    })(),
    stream.signal,
  );
  // Replies are taken as they come, as the transport takes them.
  const got: RunBatchesResponse[] = [];
  void (async () => {
    for await (const r of replies) got.push(r as RunBatchesResponse);
  })();
  const tick = () => new Promise((r) => setTimeout(r, 10));
  return {
    claims,
    commits,
    released,
    signedWith,
    stream,
    send: (r: Request) => void requests.write(r),
    end: () => requests.close(),
    /** Lets every signature waiting so far finish. */
    release: async () => {
      await tick();
      while (gates.length > 0) gates.shift()!();
      await tick();
    },
    /** The replies, once there are `n` of them. */
    replies: (n: number) => vi.waitFor(() => {
      if (got.length < n) throw new Error(`${got.length} of ${n} replies so far`);
      return got.slice();
    }),
    tick,
  };
}

describe("RunBatches", () => {
  it("claims, signs with the leased key and commits under the latest lease token", async () => {
    const h = harness();
    h.send(batch("b1"));
    await h.tick();
    // Renewed while the batch signs: the commit carries the new token.
    h.send({ message: { case: "renewal", value: { batchId: "b1", leaseToken: "token-2" } } });
    await h.release();
    const [reply] = await h.replies(1);
    expect(reply!.batchId).toBe("b1");
    expect(reply!.result).toMatchObject({ case: "committed", value: { claimId: "claim-1", claimed: 3, commit: { stored: 3 } } });
    expect(h.signedWith).toEqual(["token-1"]);
    expect(h.commits).toHaveLength(1);
    expect(h.commits[0]).toMatchObject({ claimId: "claim-1", batchId: "b1", keyId: "k-1", fence: 7n, leaseId: "lease", leaseToken: "token-2", jobId: "job-1" });
    expect(h.commits[0]!.signatures!.recordIds).toEqual([1n, 2n, 3n]);
    expect(h.commits[0]!.signatures!.signatures.length).toBe(3 * 64);
    expect(h.released).toEqual([]);
    h.end();
  });

  it("answers a batch with nothing left to claim without committing or releasing anything", async () => {
    const h = harness({ records: 0 });
    h.send(batch("b1"));
    const [reply] = await h.replies(1);
    expect(reply!.result).toMatchObject({ case: "committed", value: { claimId: "", claimed: 0 } });
    expect(h.commits).toEqual([]);
    expect(h.released).toEqual([]);
    h.end();
  });

  it("commits nothing for an abandoned batch and gives its claim back at once", async () => {
    const h = harness();
    h.send(batch("b1"));
    h.send(batch("b2"));
    await h.tick();
    h.send({ message: { case: "abandon", value: "b1" } });
    await h.release();
    const replies = new Map((await h.replies(2)).map((r) => [r.batchId, r.result]));
    expect(replies.get("b1")).toMatchObject({ case: "error", value: { code: "aborted", message: expect.stringMatching(/lease was lost/) } });
    expect(replies.get("b2")).toMatchObject({ case: "committed" });
    expect(h.commits.map((c) => c.batchId)).toEqual(["b2"]);
    expect(h.released).toEqual(["claim-1"]);
    h.end();
  });

  it("commits nothing once the stream has ended (the executor is gone)", async () => {
    const h = harness();
    h.send(batch("b1"));
    await h.tick();
    h.stream.abort();
    await h.release();
    const [reply] = await h.replies(1);
    expect(reply!.result).toMatchObject({ case: "error", value: { code: "canceled" } });
    expect(h.commits).toEqual([]);
    expect(h.released).toEqual(["claim-1"]);
  });

  it("answers a batch the signer refuses with the signer's code and releases its claim", async () => {
    const h = harness({ signerFails: new ConnectError("the lease of key k-1 has lapsed", Code.FailedPrecondition) });
    h.send(batch("b1"));
    await h.release();
    const [reply] = await h.replies(1);
    expect(reply!.result).toMatchObject({ case: "error", value: { code: "failed_precondition", message: "the lease of key k-1 has lapsed" } });
    expect(h.commits).toEqual([]);
    expect(h.released).toEqual(["claim-1"]);
    h.end();
  });

  it("refuses a batch that breaks its rules, or reuses an id in flight, on its own and runs the next", async () => {
    const h = harness();
    h.send(batch("bad", { size: 0 }));
    h.send(batch("b1"));
    h.send(batch("b1"));
    await h.release();
    const replies = await h.replies(3);
    const errors = replies.filter((r) => r.result.case === "error").map((r) => [r.batchId, r.result.value]);
    expect(errors).toEqual([
      ["bad", expect.objectContaining({ code: "invalid_argument", message: expect.stringMatching(/^size: /) })],
      ["b1", expect.objectContaining({ code: "invalid_argument", message: "batch b1 is already in flight on this stream" })],
    ]);
    expect(replies.filter((r) => r.result.case === "committed").map((r) => r.batchId)).toEqual(["b1"]);
    // The bad batch claimed nothing.
    expect(h.claims).toEqual(["claim-1"]);
    h.end();
  });
});
