import { Code, ConnectError } from "@connectrpc/connect";

/**
 * A failure already phrased for the person at the terminal: the dispatcher prints its message
 * after `keymesh <command>: ` and exits with `exitCode`.
 */
export class CliError extends Error {
  override readonly name = "CliError";
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** What the command was doing, so a failure can name it. */
export interface FailureContext {
  /** The command's name, for "see `keymesh <command> --help`". */
  readonly command: string;
  /** The mesh address the command called. */
  readonly url?: string;
  /** What to do about a NotFound, e.g. "run `keymesh sign` without --job to start a new job". */
  readonly notFound?: string;
}

/** Socket errors meaning the server was never reached (as opposed to lost mid-call). */
const UNREACHABLE: Readonly<Record<string, string>> = {
  ECONNREFUSED: "connection refused",
  ENOTFOUND: "unknown host",
  EAI_AGAIN: "host name lookup failed",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ETIMEDOUT: "connection timed out",
  ECONNRESET: "connection reset",
  EPIPE: "connection closed",
};

/**
 * One line saying what happened and what to do about it, for any error a command lets escape.
 * Connect errors get a sentence per code; the server's own message is kept where it is the
 * useful part (InvalidArgument, NotFound...). Never multi-line: messages are flattened.
 */
export function describeFailure(err: unknown, ctx: FailureContext): string {
  if (!(err instanceof ConnectError)) return oneLine(err instanceof Error ? err.message : String(err));
  const msg = oneLine(err.rawMessage);
  const where = ctx.url ?? "the mesh";
  const help = `see \`keymesh ${ctx.command} --help\``;
  switch (err.code) {
    case Code.Unavailable: {
      const socket = socketError(err);
      if (socket === undefined) return `the mesh at ${where} is unavailable: ${msg} — retry in a moment; if it persists, check the server's log`;
      if (socket === "ECONNRESET" || socket === "EPIPE") {
        return `lost the connection to ${where} (${UNREACHABLE[socket]}) — is the server still running?`;
      }
      return `cannot reach ${where} (${UNREACHABLE[socket] ?? socket}) — is \`npm start\` running? (another address: --url or KEYMESH_URL)`;
    }
    case Code.NotFound:
      return `${msg} — ${ctx.notFound ?? "check the name or id you gave"}`;
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return `the server refused the request: ${msg} — ${help}`;
    case Code.Unauthenticated:
      return `not signed in (${msg}) — run \`keymesh login\``;
    case Code.PermissionDenied:
      return `permission denied: ${msg} — ask an administrator for access`;
    case Code.DeadlineExceeded:
      return `${where} did not answer in time (${msg}) — retry; if it persists, check the server's load and log`;
    case Code.ResourceExhausted:
      return `the server is at capacity: ${msg} — retry later or ask for less at once`;
    case Code.Aborted:
      return `the request lost a race with another one: ${msg} — retry`;
    case Code.FailedPrecondition:
      return `the server cannot do this now: ${msg}`;
    case Code.AlreadyExists:
      return `${msg} — it already exists`;
    case Code.Unimplemented:
      return `${where} does not implement this call (${msg}) — is --url a keymesh mesh of this version?`;
    case Code.Canceled:
      // The CLI cancels only on Ctrl-C, which commands report themselves: this is the stream
      // cut from the other side (the server stopped or was killed, a proxy gave up).
      return `the call was cut off (${msg}) — is the server at ${where} still running?`;
    case Code.DataLoss:
      return `stored data is damaged: ${msg} — see the server's log`;
    default:
      return `the server failed (${Code[err.code]}): ${msg} — see the server's log`;
  }
}

/** The socket error code (ECONNREFUSED...) behind a client-side Unavailable, if any. */
function socketError(err: ConnectError): string | undefined {
  for (let cause: unknown = err.cause, depth = 0; cause instanceof Error && depth < 5; cause = cause.cause, depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === "string" && /^E[A-Z_]+$/.test(code)) return code;
  }
  return undefined;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim() || "no details";
}
