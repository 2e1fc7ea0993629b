import { Code, ConnectError } from "@connectrpc/connect";
import { SealedDataError, UnknownMasterKeyError } from "./crypto/envelope.js";
import { isTransientDbError } from "./storage/errors.js";

/**
 * Domain errors shared by every service, and the one mapping from them to Connect codes.
 * Domain code throws these; handlers never build ConnectErrors by hand for domain cases.
 * Messages are written for the person reading them and never contain secret material.
 */
export class DomainError extends Error {
  constructor(
    readonly code: Code,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

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

/** A lease was lost or a fencing token is stale: the work it guarded must be abandoned. */
export class LeaseLostError extends DomainError {
  constructor(message: string) {
    super(Code.Aborted, message);
  }
}

/** The system is not in a state that allows the call (e.g. retiring a master key in use). */
export class PreconditionError extends DomainError {
  constructor(message: string) {
    super(Code.FailedPrecondition, message);
  }
}

/** Every resource is busy right now; try again shortly. */
export class ExhaustedError extends DomainError {
  constructor(message: string) {
    super(Code.ResourceExhausted, message);
  }
}

/** A dependency (database, Redis, a peer service) is unreachable. */
export class DependencyUnavailableError extends DomainError {
  constructor(message: string) {
    super(Code.Unavailable, message);
  }
}

/** True for errors that mean "a backend is unreachable or busy", worth retrying later. */
export function isUnavailable(err: unknown): boolean {
  if (err instanceof DependencyUnavailableError) return true;
  if (err instanceof ConnectError) return err.code === Code.Unavailable;
  if (isTransientDbError(err)) return true;
  const name = (err as { name?: unknown } | null)?.name;
  return typeof name === "string" && (name.endsWith("UnavailableError") || name === "MaxRetriesPerRequestError");
}

/**
 * Maps any error to a ConnectError: domain errors keep their code and message, tampered data
 * is DataLoss, unreachable backends are Unavailable, everything else is Internal with a
 * generic message (details stay in the server log, never in the reply).
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof DomainError) return new ConnectError(err.message, err.code);
  if (err instanceof SealedDataError) return new ConnectError(err.message, Code.DataLoss);
  if (err instanceof UnknownMasterKeyError) return new ConnectError(err.message, Code.FailedPrecondition);
  // The original error rides along as `cause` for the server log; it never reaches the reply.
  if (isUnavailable(err)) return new ConnectError("a backend is unavailable; try again shortly", Code.Unavailable, undefined, undefined, err);
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
