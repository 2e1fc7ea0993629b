import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { withRetries } from "../retry.js";
import { isLostDbConnection } from "../storage/errors.js";

/**
 * Pauses before the attempts after the first. After the database dropped every connection,
 * each attempt may meet another dead one of the pool (discarded as it fails); two more reach a
 * fresh one in practice. No wait: the connection the next attempt takes is a different one.
 */
const RETRY_PAUSES_MS = [0, 0];

/** True when `err` is a call's Unavailable caused by a lost database connection. */
const lostDatabaseConnection = (err: unknown) => err instanceof ConnectError && err.code === Code.Unavailable && isLostDbConnection(err.cause);

/**
 * Reruns a read-only unary call (declared `idempotency_level = NO_SIDE_EFFECTS` in its proto)
 * whose handler failed because its database connection was lost, up to twice while the call's
 * deadline allows, so a client reading right after a database restart or failover gets its
 * answer instead of Unavailable. Writes are never rerun: whether a write whose connection died
 * committed is unknown, and the caller decides. Placed inside the logging, metrics and
 * identity interceptors, so a call is logged, counted and authorised once.
 */
export function createReadRetryInterceptor(): Interceptor {
  return (next) => async (req) => {
    if (req.stream || req.method.idempotency !== MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS) return next(req);
    return withRetries(() => next(req), { pausesMs: RETRY_PAUSES_MS, retryable: lostDatabaseConnection, signal: req.signal });
  };
}
