import { LeaseLostError as DomainLeaseLostError } from "../domain-errors.js";
import { UnavailableError } from "../storage/errors.js";

/**
 * Why a lease could not be renewed:
 * - "expired": its TTL ran out before the renewal;
 * - "taken": another holder has it now (or nobody: it was released or evicted);
 * - "unavailable": too few coordination nodes answered to confirm it.
 */
export type LeaseLossReason = "expired" | "taken" | "unavailable";

/**
 * The lease is gone or can no longer be confirmed; whatever it guarded must be abandoned.
 * A DomainError, so `toConnectError` answers Aborted.
 */
export class LeaseLostError extends DomainLeaseLostError {
  readonly resource: string;
  readonly reason: LeaseLossReason;

  constructor(resource: string, reason: LeaseLossReason, options?: { cause?: unknown }) {
    super(`lease on ${resource} lost (${reason})`);
    this.resource = resource;
    this.reason = reason;
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/**
 * The coordination backend (Redis) is unreachable or too few Redlock nodes answered to
 * decide. Distinct from contention, which `tryAcquire` reports as null. An UnavailableError,
 * so handlers answer Unavailable.
 */
export class CoordinationUnavailableError extends UnavailableError {
  override readonly name = "CoordinationUnavailableError";

  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super("coordination", message, options);
  }
}

/** Error messages and codes by which ioredis reports a server it cannot talk to. */
const REDIS_DOWN = [
  /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE|ENOTFOUND|EAI_AGAIN/,
  /Connection is closed/i,
  /Command timed out/i,
  /Stream isn't writeable/i,
  /max retries per request/i,
  /LOADING|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN/,
];

/** True when `err` means "Redis is unreachable" rather than "the command was wrong". */
export function isRedisUnavailable(err: unknown): boolean {
  if (err instanceof UnavailableError) return true;
  if (!(err instanceof Error)) return false;
  if (err.name === "MaxRetriesPerRequestError") return true;
  const code = (err as { code?: unknown }).code;
  const text = `${typeof code === "string" ? code : ""} ${err.message}`;
  return REDIS_DOWN.some((re) => re.test(text));
}

/** Rethrows Redis connectivity failures as CoordinationUnavailableError, anything else unchanged. */
export function toCoordinationError(err: unknown, what: string): unknown {
  if (err instanceof UnavailableError || !isRedisUnavailable(err)) return err;
  return new CoordinationUnavailableError(`${what}: Redis unavailable`, { cause: err });
}
