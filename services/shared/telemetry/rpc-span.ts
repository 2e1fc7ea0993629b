/**
 * The bookkeeping behind one RPC span: attributes, message events, the final
 * status code and span status, following connectrpc/otelconnect-go.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { SpanStatusCode, type Attributes, type Span, type TextMapGetter, type TextMapSetter } from "@opentelemetry/api";

/** Which end of the call a span describes. */
export type RpcSide = "client" | "server";

/** Values of `rpc.system`, as otelconnect-go reports them. */
export type RpcSystem = "grpc" | "grpc_web" | "connect_rpc";

/**
 * Codes that mean the server failed. Only these mark a server span as an
 * error; the others describe the caller's mistake or choice (bad input, not
 * found, cancelled) and leave the status unset. Client spans are errors for
 * every code, because the caller did not get what it asked for.
 */
const serverFaultCodes: ReadonlySet<Code> = new Set([
  Code.Unknown,
  Code.DeadlineExceeded,
  Code.Unimplemented,
  Code.Internal,
  Code.Unavailable,
  Code.DataLoss,
]);

/** Reads W3C propagation fields from fetch-style Headers. */
export const headerGetter: TextMapGetter<Headers> = {
  get: (carrier, key) => carrier.get(key) ?? undefined,
  keys: (carrier) => Array.from(carrier.keys()),
};

/** Writes W3C propagation fields into fetch-style Headers. */
export const headerSetter: TextMapSetter<Headers> = {
  set: (carrier, key, value) => carrier.set(key, value),
};

/**
 * Tells the protocol from the request's Content-Type, which Connect sets
 * before interceptors run on both ends. Connect GET requests carry none.
 */
export function detectRpcSystem(header: Headers, requestMethod: string): RpcSystem {
  const contentType = header.get("content-type") ?? "";
  if (contentType.startsWith("application/grpc-web")) return "grpc_web";
  if (contentType.startsWith("application/grpc")) return "grpc";
  if (
    contentType.startsWith("application/connect+") ||
    contentType.startsWith("application/proto") ||
    contentType.startsWith("application/json") ||
    requestMethod === "GET"
  ) {
    return "connect_rpc";
  }
  return "grpc";
}

/** The attributes every RPC span starts with. */
export function rpcAttributes(system: RpcSystem, service: string, method: string): Attributes {
  return { "rpc.system": system, "rpc.service": service, "rpc.method": method };
}

/** How a call ended, as seen by the interceptor. */
export type RpcOutcome =
  | { kind: "ok" }
  | { kind: "error"; error: unknown }
  /** The consumer stopped reading before the stream finished. */
  | { kind: "closed" };

/**
 * Tracks one RPC span: counts messages in each direction, records them as
 * `message` events, and ends the span exactly once with the status code.
 */
export class RpcSpan {
  private sent = 0;
  private received = 0;
  private ended = false;
  private readonly cleanups: Array<() => void> = [];

  /** Wraps a started span; `events` false skips the per-message events. */
  constructor(
    readonly span: Span,
    private readonly side: RpcSide,
    private readonly system: RpcSystem,
    private readonly events: boolean,
  ) {}

  /** Counts one message and records a `message` event for it. */
  message(type: "SENT" | "RECEIVED"): void {
    const id = type === "SENT" ? ++this.sent : ++this.received;
    if (this.events && !this.ended && this.span.isRecording()) {
      this.span.addEvent("message", { "message.type": type, "message.id": id });
    }
  }

  /** Registers work to undo when the span ends (listeners). */
  onEnd(cleanup: () => void): void {
    this.cleanups.push(cleanup);
  }

  /** Sets the code, counts and status, and ends the span. Later calls do nothing. */
  end(outcome: RpcOutcome): void {
    if (this.ended) return;
    this.ended = true;
    for (const cleanup of this.cleanups.splice(0)) cleanup();
    const code: Code | undefined =
      outcome.kind === "ok" ? undefined : outcome.kind === "closed" ? Code.Canceled : ConnectError.from(outcome.error).code;
    this.span.setAttributes({
      // gRPC's numbering, which Connect codes share; 0 is OK.
      "rpc.grpc.status_code": code ?? 0,
      "rpc.message.sent_count": this.sent,
      "rpc.message.received_count": this.received,
    });
    if (outcome.kind === "error" && code !== undefined) {
      if (this.system === "connect_rpc") {
        this.span.setAttribute("rpc.connect_rpc.error_code", connectCodeName(code));
      }
      if (this.isFault(outcome.error)) {
        this.span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(outcome.error) });
      }
    }
    this.span.end();
  }

  private isFault(error: unknown): boolean {
    if (this.side === "client") return true;
    // Errors that are not ConnectErrors count as Unknown (a fault), except
    // aborts, which are cancellations.
    return serverFaultCodes.has(ConnectError.from(error).code);
  }
}

/** The Connect protocol's name for a code: `invalid_argument`, `data_loss`. */
export function connectCodeName(code: Code): string {
  return (Code[code] ?? "unknown").replace(/[A-Z]/g, (c, i: number) => (i === 0 ? "" : "_") + c.toLowerCase());
}

function errorMessage(error: unknown): string {
  if (error instanceof ConnectError) return error.rawMessage;
  if (error instanceof Error) return error.message;
  return String(error);
}
