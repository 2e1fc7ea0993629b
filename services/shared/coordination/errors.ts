/**
 * Classifies Redis driver failures (ioredis, Redlock): which of them mean "Redis is
 * unreachable" rather than "the command was wrong". Only recognition lives here; the error
 * classes (`UnavailableError`, `LeaseLostError`) are in services/shared/errors.ts and
 * `toCoordinationError` (common.ts) does the conversion.
 */

/** Error messages and codes by which ioredis reports a server it cannot talk to. */
const REDIS_DOWN = [
  /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE|ENOTFOUND|EAI_AGAIN/,
  /Connection is closed/i,
  /Command timed out/i,
  /Stream isn't writeable/i,
  /max retries per request/i,
  /LOADING|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN/,
];

/** A short reason when `err` means "Redis is unreachable"; undefined for any other error. */
export function redisUnavailableCode(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  // ioredis's own class for "gave up retrying the command" carries no code.
  if (err.name === "MaxRetriesPerRequestError") return "max retries per request";
  const code = (err as { code?: unknown }).code;
  const text = `${typeof code === "string" ? code : ""} ${err.message}`;
  const match = REDIS_DOWN.map((re) => re.exec(text)).find((m) => m !== null);
  return match?.[0];
}
