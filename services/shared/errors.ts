import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Error helpers shared by the host and its interceptors. Domain errors and their mapping to
 * codes live in `domain-errors.ts`; this file is about RPC status codes themselves.
 */

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

/** The code an error would be sent with (Unknown for anything that is not a ConnectError). */
export function codeOf(err: unknown): Code {
  return ConnectError.from(err).code;
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
