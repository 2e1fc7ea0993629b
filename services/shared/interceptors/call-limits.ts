import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { abortError } from "../errors.js";
import { untilAborted } from "../until-aborted.js";
import { wrapStream } from "./wrap-stream.js";

/**
 * Limits every call is held to, whatever its handler does:
 *
 * - deadlines: connect-es parses `grpc-timeout` / `connect-timeout-ms` and aborts
 *   `ctx.signal` when the deadline passes, but a handler that ignores the signal keeps the
 *   call open. `createCallLimitInterceptor` ends the call with DeadlineExceeded (or with the
 *   shutdown / cancellation reason) as soon as the signal aborts, for unary calls and streams;
 * - malformed messages: connect-es reports binary parse failures as Internal; they are the
 *   caller's fault, so they become InvalidArgument (streams here, unary calls in
 *   server/malformed-requests.ts, which sees them before any interceptor runs).
 *
 * Message size is the adapter's `readMaxBytes` (server/host.ts): oversize → ResourceExhausted.
 */

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

/** Races a promise against the signal: when the signal wins, rejects with its abort error. */
function raceSignal<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return untilAborted(work, signal, () => abortError(signal));
}

/** Wraps a stream so that each step is raced against the signal and parse failures are remapped. */
function limitStream<T>(source: AsyncIterable<T>, signal: AbortSignal): AsyncIterable<T> {
  return wrapStream(source, {
    next: async (call, it) => {
      try {
        return await raceSignal(call(), signal);
      } catch (err) {
        // Let the handler's generator wind down in the background.
        if (signal.aborted) void it.return?.().catch(() => undefined);
        throw remapParseFailure(err);
      }
    },
  });
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
    let res;
    try {
      res = await raceSignal(next({ ...req, message: limitStream(req.message, req.signal) }), req.signal);
    } catch (err) {
      throw remapParseFailure(err);
    }
    if (!res.stream) return res;
    return { ...res, message: limitStream(res.message, req.signal) };
  };
}
