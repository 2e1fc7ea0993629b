import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { context, propagation, ROOT_CONTEXT } from "@opentelemetry/api";
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
import { codeFromName } from "../shared/errors.js";

type Request = MessageInitShape<typeof ClaimStreamRequestSchema>;
type Answer = ClaimStreamResponse["response"];

/** Collection's claim, commit and release as the signing service's batches use them. */
export interface ClaimPort {
  claimBatch(req: MessageInitShape<typeof ClaimBatchRequestSchema>): Promise<ClaimBatchResponse>;
  commitBatch(req: MessageInitShape<typeof CommitBatchRequestSchema>): Promise<CommitBatchResponse>;
  releaseClaim(req: { claimId: string }): Promise<ReleaseClaimResponse>;
}

/**
 * Collection's ClaimStream shared by this process's batches: each claim, commit or release is
 * one request, carrying the trace context active when it is made (its batch's span), and its
 * answer is matched back by request id. A message on an open stream costs a fraction of a
 * unary call (no HTTP/2 stream, headers or trailers of its own). When the stream breaks (the
 * collection service restarts), every waiting request fails with Unavailable and the next one
 * opens a new stream. The stream itself is opened outside any batch's trace.
 */
export function createClaimStream(client: Client<typeof CollectionService>): ClaimPort & { close(): void } {
  let current: { send(req: Request): void; close(): void } | undefined;
  const waiting = new Map<number, { resolve(res: Answer): void; reject(err: unknown): void }>();
  let lastId = 0;

  function open() {
    const requests = createWritableIterable<Request>();
    const stream = {
      send(req: Request) {
        // A broken stream answers the request through failAll.
        requests.write(req).catch(() => undefined);
      },
      close() {
        requests.close();
      },
    };
    const failAll = (err: unknown) => {
      if (current === stream) current = undefined;
      for (const [id, w] of waiting) {
        waiting.delete(id);
        w.reject(err);
      }
    };
    void (async () => {
      try {
        const replies = context.with(ROOT_CONTEXT, () => client.claimStream(requests));
        for await (const res of replies) {
          const w = waiting.get(res.requestId);
          if (!w) continue;
          waiting.delete(res.requestId);
          w.resolve(res.response);
        }
        failAll(new ConnectError("claim stream ended", Code.Unavailable));
      } catch (err) {
        failAll(ConnectError.from(err));
      }
    })();
    return stream;
  }

  async function call(request: Request["request"]): Promise<Answer> {
    const carrier: Record<string, string> = {};
    propagation.inject(context.active(), carrier);
    // Ids wrap around at 2^32; a stream never has anywhere near that many requests in flight.
    do lastId = (lastId + 1) >>> 0;
    while (waiting.has(lastId));
    const requestId = lastId;
    const answer = await new Promise<Answer>((resolve, reject) => {
      waiting.set(requestId, { resolve, reject });
      current ??= open();
      current.send({ requestId, request, traceparent: carrier.traceparent ?? "", tracestate: carrier.tracestate ?? "" });
    });
    if (answer.case === "error") throw new ConnectError(answer.value.message, codeFromName(answer.value.code));
    return answer;
  }

  const expect = <C extends Answer["case"]>(answer: Answer, kind: C) => {
    if (answer.case !== kind) throw new ConnectError(`the claim stream answered a ${kind} with ${answer.case ?? "nothing"}`, Code.Internal);
    return answer.value as Extract<Answer, { case: C }>["value"];
  };

  return {
    async claimBatch(req) {
      return expect(await call({ case: "claim", value: req }), "claim");
    },
    async commitBatch(req) {
      return expect(await call({ case: "commit", value: req }), "commit");
    },
    async releaseClaim(req) {
      return expect(await call({ case: "release", value: req }), "release");
    },
    close() {
      current?.close();
      current = undefined;
    },
  };
}
