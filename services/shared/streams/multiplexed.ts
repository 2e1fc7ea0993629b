import { Code, ConnectError } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { context, ROOT_CONTEXT, type Context } from "@opentelemetry/api";

/**
 * Many calls multiplexed over one long-lived bidirectional stream, the client side: a call
 * is a request message whose answer comes back under the same key (a request id, a batch id),
 * in whatever order answers come. The stream opens with the first call, in `streamContext`
 * (by default outside any trace: never in a caller's, so that its long-lived span belongs to
 * no one caller). When it breaks (the peer restarts), every waiting call fails with
 * Unavailable, and the next call opens a new stream.
 */
export function createMultiplexedStream<Req, Res, K>(opts: {
  /** How errors name the stream ("the claim stream"). */
  readonly name: string;
  readonly open: (requests: AsyncIterable<Req>) => AsyncIterable<Res>;
  /** The key of the call an answer belongs to. */
  readonly keyOf: (res: Res) => K;
  readonly streamContext?: Context;
}) {
  let current: { send(req: Req): Promise<void>; close(): void } | undefined;
  const waiting = new Map<K, { resolve(res: Res): void; reject(err: unknown): void }>();

  function start() {
    const requests = createWritableIterable<Req>();
    const stream = {
      // Settles when the stream takes the request; a broken stream answers the waiting calls
      // through failAll, so the write's own rejection carries nothing new.
      send: (req: Req) => requests.write(req).catch(() => undefined),
      close: () => requests.close(),
    };
    const failAll = (err: unknown) => {
      if (current === stream) current = undefined;
      for (const [key, w] of waiting) {
        waiting.delete(key);
        w.reject(err);
      }
    };
    void (async () => {
      try {
        for await (const res of context.with(opts.streamContext ?? ROOT_CONTEXT, () => opts.open(requests))) {
          const key = opts.keyOf(res);
          const w = waiting.get(key);
          if (!w) continue;
          waiting.delete(key);
          w.resolve(res);
        }
        failAll(new ConnectError(`${opts.name} ended`, Code.Unavailable));
      } catch (err) {
        failAll(ConnectError.from(err));
      }
    })();
    return stream;
  }

  return {
    /**
     * Sends a call's request: `taken` settles when the stream has taken it, `answer` with the
     * answer that comes back under `key`.
     */
    call(key: K, req: Req): { taken: Promise<void>; answer: Promise<Res> } {
      let taken!: Promise<void>;
      const answer = new Promise<Res>((resolve, reject) => {
        waiting.set(key, { resolve, reject });
        current ??= start();
        taken = current.send(req);
      });
      return { taken, answer };
    },
    /** Whether a call under `key` is waiting for its answer. */
    waiting: (key: K) => waiting.has(key),
    /** Sends a message that expects no answer, on the open stream (none open: nothing to tell). */
    tell(req: Req): void {
      void current?.send(req);
    },
    /** Ends the stream once the waiting calls are answered. */
    close(): void {
      current?.close();
      current = undefined;
    },
  };
}
