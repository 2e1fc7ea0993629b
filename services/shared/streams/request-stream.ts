import { Code, ConnectError } from "@connectrpc/connect";
import { context, propagation, type Context } from "@opentelemetry/api";
import { codeFromName } from "../errors.js";
import { createMultiplexedStream } from "./multiplexed.js";
import type { StreamFailure } from "./request-span.js";

/** A request on a request stream: an id its response echoes, and its caller's trace context. */
interface StreamRequest<R> {
  requestId: number;
  request: R;
  traceparent: string;
  tracestate: string;
}

/** A response on a request stream: the request's id, and its answer or an error. */
interface StreamResponse<A> {
  readonly requestId: number;
  readonly response: A;
}


/**
 * A unary API multiplexed over one long-lived bidirectional stream (Collection's ClaimStream,
 * the key service's LeaseStream; multiplexed.ts): each call is one request message carrying
 * an id and the trace context active when it is made. A message on an open stream costs a
 * fraction of a unary call: no HTTP/2 stream, headers or trailers of its own. An error answer
 * rejects its call with the code and message the unary RPC would have given.
 */
export function createRequestStream<R, A extends { readonly case: string | undefined }>(
  name: string,
  open: (requests: AsyncIterable<StreamRequest<R>>) => AsyncIterable<StreamResponse<A>>,
  streamContext?: Context,
) {
  const stream = createMultiplexedStream({ name, open, keyOf: (res: StreamResponse<A>) => res.requestId, streamContext });
  let lastId = 0;

  return {
    /**
     * Sends one request and resolves with its answer, or rejects with its error. The answer's
     * case is checked against `expected`: any other is a peer speaking another protocol.
     */
    async call<C extends Exclude<A["case"], "error" | undefined>>(request: R, expected: C): Promise<Extract<A, { case: C }>> {
      const carrier: Record<string, string> = {};
      propagation.inject(context.active(), carrier);
      // Ids wrap around at 2^32; a stream never has anywhere near that many requests in flight.
      do lastId = (lastId + 1) >>> 0;
      while (stream.waiting(lastId));
      const requestId = lastId;
      const { response: answer } = await stream.call(requestId, { requestId, request, traceparent: carrier.traceparent ?? "", tracestate: carrier.tracestate ?? "" }).answer;
      if (answer.case === "error") {
        const failure = (answer as unknown as { value: StreamFailure }).value;
        throw new ConnectError(failure.message, codeFromName(failure.code));
      }
      if (answer.case !== expected) throw new ConnectError(`${name} answered a ${expected} with ${answer.case ?? "nothing"}`, Code.Internal);
      return answer as Extract<A, { case: C }>;
    },
    /** Ends the stream once the waiting calls are answered. */
    close: () => stream.close(),
  };
}
