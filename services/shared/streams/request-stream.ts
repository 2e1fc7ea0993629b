import { Code, ConnectError } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { context, propagation, ROOT_CONTEXT, type Context } from "@opentelemetry/api";
import { codeFromName } from "../errors.js";

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

type Failure = { readonly case: "error"; readonly value: { readonly code: string; readonly message: string } };

/**
 * A unary API multiplexed over one long-lived bidirectional stream (Collection's ClaimStream,
 * the key service's LeaseStream): each call is one request message carrying an id and the
 * trace context active when it is made, and its answer is matched back by id, in whatever
 * order answers come. A message on an open stream costs a fraction of a unary call: no HTTP/2
 * stream, headers or trailers of its own. An error answer rejects its call with the code and
 * message the unary RPC would have given. When the stream breaks (the peer restarts), every
 * waiting call fails with Unavailable and the next call opens a new stream. The stream is
 * opened in `streamContext` (by default outside any trace), never in a caller's, so that its
 * long-lived span belongs to no one batch.
 */
export function createRequestStream<R, A extends { readonly case: string | undefined }>(
  name: string,
  open: (requests: AsyncIterable<StreamRequest<R>>) => AsyncIterable<StreamResponse<A>>,
  streamContext: Context = ROOT_CONTEXT,
) {
  let current: { send(req: StreamRequest<R>): void; close(): void } | undefined;
  const waiting = new Map<number, { resolve(res: A): void; reject(err: unknown): void }>();
  let lastId = 0;

  function start() {
    const requests = createWritableIterable<StreamRequest<R>>();
    const stream = {
      send(req: StreamRequest<R>) {
        // A broken stream answers the call through failAll.
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
        for await (const res of context.with(streamContext, () => open(requests))) {
          const w = waiting.get(res.requestId);
          if (!w) continue;
          waiting.delete(res.requestId);
          w.resolve(res.response);
        }
        failAll(new ConnectError(`${name} ended`, Code.Unavailable));
      } catch (err) {
        failAll(ConnectError.from(err));
      }
    })();
    return stream;
  }

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
      while (waiting.has(lastId));
      const requestId = lastId;
      const answer = await new Promise<A>((resolve, reject) => {
        waiting.set(requestId, { resolve, reject });
        current ??= start();
        current.send({ requestId, request, traceparent: carrier.traceparent ?? "", tracestate: carrier.tracestate ?? "" });
      });
      if (answer.case === "error") {
        const failure = answer as unknown as Failure;
        throw new ConnectError(failure.value.message, codeFromName(failure.value.code));
      }
      if (answer.case !== expected) throw new ConnectError(`${name} answered a ${expected} with ${answer.case ?? "nothing"}`, Code.Internal);
      return answer as Extract<A, { case: C }>;
    },
    /** Ends the stream once the waiting calls are answered. */
    close() {
      current?.close();
      current = undefined;
    },
  };
}
