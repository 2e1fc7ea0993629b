/**
 * The one stream wrapper of the interceptors (logging, call limits, tracing) and of the
 * host's response rewriting: it observes an AsyncIterable's messages and how it ends, without
 * changing its `return`/`throw` behaviour. `return` and `throw` exist on the wrapper exactly
 * when they exist on the source iterator and are passed through, as connectrpc/validate-es
 * does: a consumer that stops early still stops the producer.
 */

/** How a stream ended: finished, failed, or closed early by its consumer. */
export type StreamOutcome =
  | { readonly kind: "ok" }
  | { readonly kind: "error"; readonly error: unknown }
  /** The consumer stopped reading before the stream finished. */
  | { readonly kind: "closed" };

/** What `wrapStream` does around the source; every hook is optional. */
export interface StreamHooks<T> {
  /** Runs every call on the source (creating its iterator, next, return, throw), e.g. in an OpenTelemetry context. */
  within?<R>(call: () => R): R;
  /** Wraps each `next` of the source: may race it against a signal or replace its error. */
  next?(call: () => Promise<IteratorResult<T>>, source: AsyncIterator<T>): Promise<IteratorResult<T>>;
  /** Sees each message and returns it, or a replacement. */
  message?(value: T): T;
  /** Called once, when the stream finishes, fails or is closed early. */
  end?(outcome: StreamOutcome): void;
}

/** Returns an AsyncIterable over `source`'s messages with the hooks applied. */
export function wrapStream<T>(source: AsyncIterable<T>, hooks: StreamHooks<T>): AsyncIterable<T> {
  const within = hooks.within ?? (<R>(call: () => R) => call());
  return {
    [Symbol.asyncIterator]() {
      let ended = false;
      const end = (outcome: StreamOutcome) => {
        if (ended) return;
        ended = true;
        hooks.end?.(outcome);
      };
      const fail = (error: unknown): never => {
        end({ kind: "error", error });
        throw error;
      };
      const settle = (result: IteratorResult<T>): IteratorResult<T> => {
        if (result.done === true) {
          end({ kind: "ok" });
          return result;
        }
        return hooks.message ? { done: false, value: hooks.message(result.value) } : result;
      };
      const it = within(() => source[Symbol.asyncIterator]());
      const step = () => within(() => it.next());
      const wrapped: AsyncIterator<T> = {
        async next() {
          let result: IteratorResult<T>;
          try {
            result = await (hooks.next ? hooks.next(step, it) : step());
          } catch (e) {
            return fail(e);
          }
          return settle(result);
        },
      };
      const { return: itReturn, throw: itThrow } = it;
      if (itReturn) {
        wrapped.return = async (value?: unknown) => {
          let result: IteratorResult<T>;
          try {
            result = await within(() => itReturn.call(it, value));
          } catch (e) {
            return fail(e);
          }
          end({ kind: "closed" });
          return result;
        };
      }
      if (itThrow) {
        wrapped.throw = async (error?: unknown) => {
          let result: IteratorResult<T>;
          try {
            result = await within(() => itThrow.call(it, error));
          } catch (e) {
            return fail(e);
          }
          return settle(result);
        };
      }
      return wrapped;
    },
  };
}
