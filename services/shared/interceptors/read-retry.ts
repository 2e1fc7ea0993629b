import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { dbUnavailableCode } from "../storage/errors.js";

/**
 * Driver codes of a database connection that was lost under a call: killed by the server, reset,
 * or closed by a restart or failover. A pool still holds such connections until it sees them
 * close, so the call that meets one failed for nothing the database is doing now, and a fresh
 * connection usually answers. A refused connection, a deadlock or a full pool is not this.
 */
const LOST_CONNECTION = new Set([
  "PROTOCOL_CONNECTION_LOST",
  "PROTOCOL_ENQUEUE_AFTER_FATAL_ERROR",
  "PROTOCOL_ENQUEUE_AFTER_QUIT",
  "ER_CONNECTION_KILLED",
  "ER_SERVER_SHUTDOWN",
  "ER_NET_READ_ERROR",
  "ER_NET_READ_INTERRUPTED",
  "ER_NET_ERROR_ON_WRITE",
  "ER_NET_WRITE_INTERRUPTED",
  "ECONNRESET",
  "EPIPE",
  "connection closed",
]);

/**
 * Attempts after the first. After the database dropped every connection, each attempt may meet
 * another dead one of the pool (discarded as it fails); two more reach a fresh one in practice.
 */
const RETRIES = 2;

/** True when `err` is a call's Unavailable caused by a lost database connection. */
export function lostDatabaseConnection(err: unknown): boolean {
  if (!(err instanceof ConnectError) || err.code !== Code.Unavailable) return false;
  const code = dbUnavailableCode(err.cause);
  return code !== undefined && LOST_CONNECTION.has(code);
}

/**
 * Reruns a read-only unary call (declared `idempotency_level = NO_SIDE_EFFECTS` in its proto)
 * whose handler failed because its database connection was lost, up to RETRIES times while the
 * call's deadline allows, so a client reading right after a database restart or failover gets
 * its answer instead of Unavailable. Writes are never rerun: whether a write whose connection
 * died committed is unknown, and the caller decides. Placed inside the logging, metrics and
 * identity interceptors, so a call is logged, counted and authorised once.
 */
export function createReadRetryInterceptor(): Interceptor {
  return (next) => async (req) => {
    if (req.stream || req.method.idempotency !== MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS) return next(req);
    for (let attempt = 0; ; attempt++) {
      try {
        return await next(req);
      } catch (err) {
        if (attempt >= RETRIES || req.signal.aborted || !lostDatabaseConnection(err)) throw err;
      }
    }
  };
}
