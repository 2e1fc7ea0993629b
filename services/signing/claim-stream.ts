import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type {
  ClaimBatchRequestSchema,
  ClaimBatchResponse,
  ClaimStreamRequestSchema,
  ClaimStreamResponse,
  CollectionService,
  CommitBatchRequestSchema,
  CommitBatchResponse,
  ReleaseClaimResponse,
} from "../../gen/keymesh/collection/v1/collection_service_pb.js";
import { createRequestStream } from "../shared/streams/request-stream.js";

/** Collection's claim, commit and release as the signing service's batches use them. */
export interface ClaimPort {
  claimBatch(req: MessageInitShape<typeof ClaimBatchRequestSchema>): Promise<ClaimBatchResponse>;
  commitBatch(req: MessageInitShape<typeof CommitBatchRequestSchema>): Promise<CommitBatchResponse>;
  releaseClaim(req: { claimId: string }): Promise<ReleaseClaimResponse>;
}

/**
 * Collection's ClaimStream shared by this process's batches (see request-stream.ts): a claim,
 * a commit or a release is one message on it, in its batch's trace.
 */
export function createClaimStream(client: Client<typeof CollectionService>): ClaimPort & { close(): void } {
  const stream = createRequestStream<MessageInitShape<typeof ClaimStreamRequestSchema>["request"], ClaimStreamResponse["response"]>("the claim stream", (requests) =>
    client.claimStream(requests),
  );
  return {
    claimBatch: async (req) => (await stream.call({ case: "claim", value: req }, "claim")).value,
    commitBatch: async (req) => (await stream.call({ case: "commit", value: req }, "commit")).value,
    releaseClaim: async (req) => (await stream.call({ case: "release", value: req }, "release")).value,
    close: () => stream.close(),
  };
}
