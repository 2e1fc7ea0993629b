import { Code, ConnectError } from "@connectrpc/connect";
import { redisUnavailableCode } from "./coordination/errors.js";
import { dbUnavailableCode } from "./storage/errors.js";

/**
 * The one errors module: the domain errors every service throws, and the one mapping from
 * any error to a Connect code. It is the bottom layer of services/shared: storage/ and
 * coordination/ import it to classify their drivers' failures into these classes (their
 * errors.ts files only recognise driver codes), crypto/ throws them, and handlers never build
 * ConnectErrors by hand for domain cases. Messages are written for the person reading them
 * and never contain secret material.
 */

/** A failure with a meaning for the caller; `code` is the Connect code it is answered with. */
export class DomainError extends Error {
  /** Protobuf messages sent with the error, for callers that need the outcome as data. */
  readonly details: ErrorDetail[];

  constructor(
    readonly code: Code,
    message: string,
    options?: { cause?: unknown; details?: ErrorDetail[] },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.details = options?.details ?? [];
  }
}

/** An error detail as ConnectError takes it: a message schema and the message's fields. */
export type ErrorDetail = NonNullable<ConstructorParameters<typeof ConnectError>[3]>[number];

/** The request is malformed or out of range. */
export class InvalidInputError extends DomainError {
  constructor(message: string) {
    super(Code.InvalidArgument, message);
  }
}

/** The named thing does not exist (or the caller may not know it does). */
export class NotFoundError extends DomainError {
  constructor(message: string) {
    super(Code.NotFound, message);
  }
}

/**
 * Why a lease is gone:
 * - "expired": its TTL ran out before the renewal;
 * - "taken": another holder has it now (or nobody: it was released or evicted);
 * - "unavailable": too few coordination nodes answered to confirm it;
 * - "stale": the fencing token presented is no longer the current one.
 */
export type LeaseLossReason = "expired" | "taken" | "unavailable" | "stale";

/** A lease was lost or a fencing token is stale: the work it guarded must be abandoned (Aborted). */
export class LeaseLostError extends DomainError {
  constructor(
    readonly resource: string,
    readonly reason: LeaseLossReason,
    options?: { message?: string; cause?: unknown },
  ) {
    super(Code.Aborted, options?.message ?? `lease on ${resource} lost (${reason})`, options);
  }
}

/** The system is not in a state that allows the call (a stale check-and-set, retiring a master key in use). */
export class PreconditionError extends DomainError {
  constructor(message: string) {
    super(Code.FailedPrecondition, message);
  }
}

/** Every resource is busy right now; try again shortly. */
export class ExhaustedError extends DomainError {
  constructor(message: string, options?: { details?: ErrorDetail[] }) {
    super(Code.ResourceExhausted, message, options);
  }
}

/**
 * A dependency (the database, Redis, a peer) is unreachable or temporarily refusing work.
 * Answered as Unavailable with a generic message: the driver's detail goes to the log only.
 */
export class UnavailableError extends DomainError {
  /** The driver's own error code when there was one (ECONNREFUSED, ER_LOCK_DEADLOCK, SQLITE_BUSY, ...). */
  readonly driverCode: string | undefined;

  constructor(
    /** Which dependency failed: "database", "coordination", ... */
    readonly dependency: string,
    message: string,
    options?: { cause?: unknown; driverCode?: string },
  ) {
    super(Code.Unavailable, message, options);
    this.driverCode = options?.driverCode;
  }
}

/** A sealed value could not be opened: tampered, truncated, moved to another row, or malformed. */
export class SealedDataError extends DomainError {
  constructor(message: string) {
    super(Code.DataLoss, message);
  }
}

/** A sealed value names a master-key version this process does not hold (or that is retired). */
export class UnknownMasterKeyError extends DomainError {
  constructor(readonly version: number) {
    super(Code.FailedPrecondition, `master key version ${version} is not loaded`);
  }
}

/**
 * Maps any error to a ConnectError: domain errors keep their code and message, an
 * unavailable dependency is Unavailable with a generic message, everything else is Internal
 * with a generic message. The original error rides along as `cause` for the server log; it
 * never reaches the reply.
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof UnavailableError || dbUnavailableCode(err) !== undefined || redisUnavailableCode(err) !== undefined) {
    return new ConnectError("a backend is unavailable; try again shortly", Code.Unavailable, undefined, undefined, err);
  }
  if (err instanceof DomainError) return new ConnectError(err.message, err.code, undefined, err.details);
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}

/** Wraps a handler method so that whatever it throws leaves as a proper ConnectError. */
export function mapErrors<A extends unknown[], R>(fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args: A) => {
    try {
      return await fn(...args);
    } catch (err) {
      throw toConnectError(err);
    }
  };
}

/** The lower snake_case name of a code as the Connect protocol spells it ("ok" for success). */
export function codeName(code: Code | 0): string {
  if (code === 0) return "ok";
  const name = Code[code];
  if (name === undefined) return String(code);
  return name.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

/** The code for a name spelled as `codeName` spells it; Unknown for a name that is none. */
export function codeFromName(name: string): Code {
  const pascal = name.replace(/(^|_)([a-z])/g, (_, __, c: string) => c.toUpperCase());
  const code = (Code as unknown as Record<string, Code | undefined>)[pascal];
  return typeof code === "number" ? code : Code.Unknown;
}

/** The error in-flight calls end with when the server stops before they finish. */
export function shuttingDownError(): ConnectError {
  return new ConnectError("the server is shutting down", Code.Unavailable);
}

/**
 * The error a call ends with because its signal aborted: the signal's own reason when it is
 * a ConnectError (deadline, shutdown), Canceled otherwise (the client went away).
 */
export function abortError(signal: AbortSignal): ConnectError {
  const reason: unknown = signal.reason;
  if (reason instanceof ConnectError) return reason;
  return new ConnectError("the call was cancelled", Code.Canceled);
}
