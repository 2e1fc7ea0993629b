import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Config } from "../config.js";
import { abortError } from "../errors.js";

/**
 * Limits every call is held to, whatever its handler does:
 *
 * - message size: `readMaxBytes` on the router (oversize → ResourceExhausted);
 * - deadlines: connect-es parses `grpc-timeout` / `connect-timeout-ms` and aborts
 *   `ctx.signal` when the deadline passes, but a handler that ignores the signal keeps the
 *   call open. `createCallLimitInterceptor` ends the call with DeadlineExceeded (or with the
 *   shutdown / cancellation reason) as soon as the signal aborts, for unary calls and streams;
 * - malformed messages: connect-es reports binary parse failures as Internal; they are the
 *   caller's fault, so they become InvalidArgument (streams here, unary calls in the
 *   request handler, which sees them before any interceptor runs).
 */

/** Router options derived from the configuration. */
export interface RouterLimits {
  /** Largest accepted message; larger ones fail with ResourceExhausted. */
  readonly readMaxBytes: number;
  /** Largest message the server will send. */
  readonly writeMaxBytes: number;
}

/** The router limits for a configuration. */
export function routerLimits(config: Pick<Config, "maxRequestBytes">): RouterLimits {
  return { readMaxBytes: config.maxRequestBytes, writeMaxBytes: 0xffffffff };
}

/** The prefix connect-es gives binary parse failures. */
const PARSE_FAILURE = /^(\[internal\] )?parse binary:/;

/** True for connect-es's report of a request message that is not valid protobuf. */
export function isParseFailure(err: unknown): boolean {
  return err instanceof ConnectError && err.code === Code.Internal && PARSE_FAILURE.test(err.rawMessage);
}

/** The InvalidArgument error a parse failure is reported as. */
export function malformedMessageError(err: unknown): ConnectError {
  const detail = err instanceof ConnectError ? err.rawMessage.replace(/^parse binary:\s*/, "") : String(err);
  return new ConnectError(`malformed request message: ${detail}`, Code.InvalidArgument);
}

function remapParseFailure(err: unknown): unknown {
  return isParseFailure(err) ? malformedMessageError(err) : err;
}

/** Resolves when the signal aborts; never rejects. Call `dispose` when no longer needed. */
function whenAborted(signal: AbortSignal): { promise: Promise<void>; dispose(): void } {
  let onAbort: () => void = () => undefined;
  const promise = new Promise<void>((resolve) => {
    onAbort = () => resolve();
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  return { promise, dispose: () => signal.removeEventListener("abort", onAbort) };
}

/** Races a promise against the signal: when the signal wins, rejects with its abort error. */
async function raceSignal<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    work.catch(() => undefined);
    throw abortError(signal);
  }
  const aborted = whenAborted(signal);
  try {
    const winner = await Promise.race([work.then((value) => ({ value })), aborted.promise.then(() => undefined)]);
    if (winner === undefined) {
      work.catch(() => undefined);
      throw abortError(signal);
    }
    return winner.value;
  } finally {
    aborted.dispose();
  }
}

/** Wraps an async iterable so that each step is raced against the signal. */
function limitStream<T>(source: AsyncIterable<T>, signal: AbortSignal, remap: (e: unknown) => unknown): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const it = source[Symbol.asyncIterator]();
      return {
        async next() {
          try {
            return await raceSignal(it.next(), signal);
          } catch (err) {
            if (signal.aborted) {
              // Let the handler's generator wind down in the background.
              void it.return?.().catch(() => undefined);
            }
            throw remap(err);
          }
        },
        async return(value?: unknown) {
          return (await it.return?.(value)) ?? { done: true as const, value: undefined };
        },
        async throw(err?: unknown) {
          if (it.throw) return it.throw(err);
          throw err;
        },
      };
    },
  };
}

/**
 * Creates the innermost server interceptor enforcing deadlines, cancellation and shutdown:
 * when the call's signal aborts, the call ends at once with the abort reason
 * (DeadlineExceeded, Unavailable during shutdown, Canceled) even if the handler ignores it.
 */
export function createCallLimitInterceptor(): Interceptor {
  return (next) => async (req) => {
    if (!req.stream) {
      return raceSignal(next(req), req.signal);
    }
    const input = limitStream(req.message, req.signal, remapParseFailure);
    let res;
    try {
      res = await raceSignal(next({ ...req, message: input }), req.signal);
    } catch (err) {
      throw remapParseFailure(err);
    }
    if (!res.stream) return res;
    return { ...res, message: limitStream(res.message, req.signal, remapParseFailure) };
  };
}
