/**
 * Wraps an AsyncIterable so that each message and the end of the stream are
 * reported, and so that the source runs inside a given OpenTelemetry context.
 */
import { context, type Context } from "@opentelemetry/api";
import type { RpcOutcome } from "./rpc-span.js";

/** Callbacks and context for `traceStream`. */
export interface TraceStreamHooks {
  /**
   * Active while the source's `next`/`return`/`throw` run. An async generator's
   * body runs inside these calls, so a handler's stream sees its RPC span.
   */
  ctx: Context;
  /** Called once per message that passes through. */
  onMessage(): void;
  /** Called when the stream finishes, fails, or its consumer closes it early. */
  onEnd?(outcome: RpcOutcome): void;
}

/**
 * Returns an AsyncIterable over the same messages as `source`. `return` and
 * `throw` exist on the wrapper exactly when they exist on the source iterator
 * and are passed through unchanged, as connectrpc/validate-es does.
 */
export function traceStream<T>(source: AsyncIterable<T>, hooks: TraceStreamHooks): AsyncIterable<T> {
  const inCtx = <R>(fn: () => R): R => context.with(hooks.ctx, fn);
  const fail = (error: unknown): never => {
    hooks.onEnd?.({ kind: "error", error });
    throw error;
  };
  const settle = (result: IteratorResult<T>): IteratorResult<T> => {
    if (result.done === true) {
      hooks.onEnd?.({ kind: "ok" });
    } else {
      hooks.onMessage();
    }
    return result;
  };
  return {
    [Symbol.asyncIterator]() {
      const it = inCtx(() => source[Symbol.asyncIterator]());
      const traced: AsyncIterator<T> = {
        async next(...args: [] | [unknown]) {
          let result: IteratorResult<T>;
          try {
            result = await inCtx(() => it.next(...args));
          } catch (e) {
            return fail(e);
          }
          return settle(result);
        },
      };
      const { return: itReturn, throw: itThrow } = it;
      if (itReturn) {
        traced.return = async (value?: unknown) => {
          let result: IteratorResult<T>;
          try {
            result = await inCtx(() => itReturn.call(it, value));
          } catch (e) {
            return fail(e);
          }
          hooks.onEnd?.({ kind: "closed" });
          return result;
        };
      }
      if (itThrow) {
        traced.throw = async (error?: unknown) => {
          let result: IteratorResult<T>;
          try {
            result = await inCtx(() => itThrow.call(it, error));
          } catch (e) {
            return fail(e);
          }
          return settle(result);
        };
      }
      return traced;
    },
  };
}
