import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Interceptor, type StreamRequest, type UnaryRequest } from "@connectrpc/connect";
import type { Logger } from "pino";
import { REQUEST_ID_HEADER, requestIdKey } from "../context.js";
import { codeName } from "../errors.js";
import { wrapStream } from "./wrap-stream.js";

/** Options for `createLoggingInterceptor`. */
export interface LoggingInterceptorOptions {
  /** Where the one line per call goes. */
  readonly logger: Logger;
  /**
   * Calls for which the line is written at debug level instead of info, e.g. health probes
   * and reflection; failures are still logged at warn/error.
   */
  readonly quiet?: (req: UnaryRequest | StreamRequest) => boolean;
}

/** Codes logged at error level: bugs and broken data. Everything else is a warning. */
const SERIOUS: ReadonlySet<Code> = new Set([Code.Unknown, Code.Internal, Code.DataLoss]);

const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:\-]{1,128}$/;

/**
 * Creates the outermost server interceptor: it assigns the call a request id (the caller's
 * `x-request-id` when it is sane, a fresh UUID otherwise), stores it in the `requestIdKey`
 * context value, echoes it in the response header, and writes one JSON line when the call
 * ends: request id, service, method, code, duration and, for streams, message counts.
 * Message contents are never logged.
 */
export function createLoggingInterceptor(opts: LoggingInterceptorOptions): Interceptor {
  const { logger } = opts;
  return (next) => async (req) => {
    const started = performance.now();
    const offered = req.header.get(REQUEST_ID_HEADER);
    const requestId = offered !== null && REQUEST_ID_PATTERN.test(offered) ? offered : randomUUID();
    req.contextValues.set(requestIdKey, requestId);
    const quiet = opts.quiet?.(req) ?? false;
    const fields = { requestId, service: req.service.typeName, method: req.method.name };
    let received = 0;
    let sent = 0;
    let logged = false;
    const log = (err: unknown) => {
      if (logged) return;
      logged = true;
      const durationMs = Math.round((performance.now() - started) * 1000) / 1000;
      const line: Record<string, unknown> = { ...fields, durationMs };
      if (req.stream) Object.assign(line, { messagesReceived: received, messagesSent: sent });
      if (err === undefined) {
        line.code = "ok";
        logger[quiet ? "debug" : "info"](line, "rpc");
        return;
      }
      const ce = ConnectError.from(err);
      line.code = codeName(ce.code);
      line.error = ce.rawMessage;
      const serious = SERIOUS.has(ce.code);
      if (serious) {
        const cause = err instanceof ConnectError ? err.cause : err;
        if (cause !== undefined) line.cause = describeCause(cause);
      }
      logger[serious ? "error" : "warn"](line, "rpc");
    };

    if (!req.stream) {
      try {
        const res = await next(req);
        res.header.set(REQUEST_ID_HEADER, requestId);
        log(undefined);
        return res;
      } catch (err) {
        if (err instanceof ConnectError) err.metadata.set(REQUEST_ID_HEADER, requestId);
        log(err);
        throw err;
      }
    }

    const input = req.message;
    const counted: StreamRequest = {
      ...req,
      message: wrapStream(input, { message: (m) => (received++, m) }),
    };
    let res;
    try {
      res = await next(counted);
    } catch (err) {
      if (err instanceof ConnectError) err.metadata.set(REQUEST_ID_HEADER, requestId);
      log(err);
      throw err;
    }
    res.header.set(REQUEST_ID_HEADER, requestId);
    if (!res.stream) {
      log(undefined);
      return res;
    }
    return {
      ...res,
      message: wrapStream(res.message, { message: (m) => (sent++, m), end: (o) => log(o.kind === "error" ? o.error : undefined) }),
    };
  };
}

/**
 * A short, safe description of an internal error's cause for the log: its name, code and
 * the start of its message with long hex/base64 runs (SQL literals, key material) redacted.
 */
export function describeCause(cause: unknown): string {
  const e = cause as { name?: unknown; code?: unknown; message?: unknown } | null;
  const name = typeof e?.name === "string" ? e.name : "Error";
  const code = typeof e?.code === "string" ? ` ${e.code}` : "";
  const message = String(typeof e?.message === "string" ? e.message : cause)
    .replace(/X'[0-9a-fA-F]*'/g, "X'…'")
    .replace(/[A-Za-z0-9+/=_-]{32,}/g, "[redacted]")
    .slice(0, 300);
  return `${name}${code}: ${message}`;
}
