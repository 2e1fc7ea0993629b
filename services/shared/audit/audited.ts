import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { peerAddressKey, principalKey } from "../context.js";
import { toConnectError } from "../errors.js";
import { codeName } from "../errors.js";
import { AuditUnavailableError } from "./audit-log.js";
import { principalIdOf } from "./principal-id.js";
import type { AuditLog, AuditOutcome } from "./types.js";

/** What a handler fills in while it runs, for its audit event. */
export interface AuditScope {
  object?: { kind: string; id: string };
  version?: number;
}

/** Codes that mean "refused" rather than "broke". */
const DENIED: ReadonlySet<Code> = new Set([
  Code.InvalidArgument,
  Code.NotFound,
  Code.AlreadyExists,
  Code.PermissionDenied,
  Code.Unauthenticated,
  Code.FailedPrecondition,
  Code.OutOfRange,
  Code.Aborted,
  Code.ResourceExhausted,
]);

/** The audit outcome of a Connect code. */
export function outcomeOf(code: Code | 0): AuditOutcome {
  if (code === 0) return "ok";
  return DENIED.has(code) ? "denied" : "error";
}

/**
 * Runs one call and audits it before it replies, fail-closed: success is recorded and only
 * then returned; a failure is recorded and rethrown. If the event cannot be written, the call
 * fails with Unavailable and its result (a secret, say) never leaves the server. With
 * `failuresOnly`, only failed calls are recorded (still fail-closed for them).
 */
export async function audited<T>(
  audit: AuditLog,
  ctx: HandlerContext,
  run: (scope: AuditScope) => Promise<T>,
  opts: { failuresOnly?: boolean } = {},
): Promise<T> {
  const scope: AuditScope = {};
  const base = {
    principal: principalIdOf(ctx.values.get(principalKey)),
    peer: ctx.values.get(peerAddressKey),
    method: `${ctx.service.typeName}/${ctx.method.name}`,
  };
  let result: T;
  try {
    result = await run(scope);
  } catch (err) {
    const failure = toConnectError(err);
    try {
      await audit.record({ ...base, ...scope, outcome: outcomeOf(failure.code), code: codeName(failure.code) });
    } catch (auditErr) {
      throw refused(auditErr);
    }
    throw failure;
  }
  // Hot paths (key leases, one per signing batch) audit only their refusals.
  if (opts.failuresOnly === true) return result;
  try {
    await audit.record({ ...base, ...scope, outcome: "ok", code: "ok" });
  } catch (auditErr) {
    throw refused(auditErr);
  }
  return result;
}

/** The reply when the audit event could not be stored: Unavailable, saying why (the cause goes to the log). */
function refused(auditErr: unknown): ConnectError {
  const err = auditErr instanceof AuditUnavailableError ? auditErr : new AuditUnavailableError(auditErr);
  return new ConnectError(err.message, Code.Unavailable, undefined, undefined, err.cause ?? err);
}
