/**
 * RPC metrics for Connect servers and clients, as connectrpc/otelconnect-go records them:
 *
 *   rpc.{server,client}.duration           histogram, ms
 *   rpc.{server,client}.request.size       histogram, By (per message)
 *   rpc.{server,client}.response.size      histogram, By (per message)
 *   rpc.{server,client}.requests_per_rpc   histogram, messages per call
 *   rpc.{server,client}.responses_per_rpc  histogram, messages per call
 *
 * with `rpc.system` (grpc, grpc_web, connect_rpc), `rpc.service`, `rpc.method` and the code:
 * `rpc.grpc.status_code` / `rpc.grpc_web.status_code` (0 on success) or, for the Connect
 * protocol, `rpc.connect_rpc.error_code` on errors only. As otelconnect-go does for streams,
 * the code is on the duration and message counts, not on the per-message sizes (it is known
 * only when the stream ends). Unlike otelconnect-go, which records `1` per streamed message,
 * the per-RPC counts are recorded once per call with the number of messages, which is what
 * the semantic conventions define. Prometheus names: `rpc_server_duration_bucket`, ...
 */
import type { DescMessage } from "@bufbuild/protobuf";
import { ConnectError, type Interceptor, type StreamRequest, type UnaryRequest } from "@connectrpc/connect";
import { metrics, type Attributes, type Histogram, type MeterProvider } from "@opentelemetry/api";
import { wrapStream, type StreamOutcome } from "../interceptors/wrap-stream.js";
import { meterName } from "./metrics.js";
import { metricsState } from "./metrics-sdk.js";
import { protoSize } from "./proto-size.js";
import { connectCodeName, detectRpcSystem, rpcAttributes, type RpcSide, type RpcSystem } from "./rpc-span.js";

/** Options of the metrics interceptors. */
export interface MetricsInterceptorOptions {
  /** Where measurements go; default: the global provider, when the metrics SDK is running. */
  meterProvider?: MeterProvider;
  /** Return false to leave a call unmeasured (health probes, reflection). */
  filter?: (req: UnaryRequest | StreamRequest) => boolean;
}

const DURATION_BUCKETS_MS = [1, 2, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10_000, 30_000, 60_000];
const SIZE_BUCKETS = [0, 64, 256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216];
const COUNT_BUCKETS = [0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, 10_000];

/** The instruments' names, `rpc.server.duration` ... `rpc.client.responses_per_rpc`. */
export const RPC_METRIC_NAMES: readonly string[] = (["server", "client"] as const).flatMap((side) =>
  ["duration", "request.size", "response.size", "requests_per_rpc", "responses_per_rpc"].map((name) => `rpc.${side}.${name}`),
);

interface Instruments {
  duration: Histogram;
  requestSize: Histogram;
  responseSize: Histogram;
  requestsPerRpc: Histogram;
  responsesPerRpc: Histogram;
}

function createInstruments(provider: MeterProvider, side: RpcSide): Instruments {
  const meter = provider.getMeter(meterName);
  const h = (name: string, unit: string, description: string, buckets: number[]) =>
    meter.createHistogram(`rpc.${side}.${name}`, { unit, description, advice: { explicitBucketBoundaries: buckets } });
  return {
    duration: h("duration", "ms", "Duration of RPCs", DURATION_BUCKETS_MS),
    requestSize: h("request.size", "By", "Size of RPC request messages", SIZE_BUCKETS),
    responseSize: h("response.size", "By", "Size of RPC response messages", SIZE_BUCKETS),
    requestsPerRpc: h("requests_per_rpc", "{count}", "Request messages per RPC", COUNT_BUCKETS),
    responsesPerRpc: h("responses_per_rpc", "{count}", "Response messages per RPC", COUNT_BUCKETS),
  };
}

/** The RPC metrics of a server: measures every call the router handles. */
export function createServerMetricsInterceptor(opts: MetricsInterceptorOptions = {}): Interceptor {
  return createRpcMetrics("server", opts);
}

/** The RPC metrics of a client: measures every call made through the transport. */
export function createClientMetricsInterceptor(opts: MetricsInterceptorOptions = {}): Interceptor {
  return createRpcMetrics("client", opts);
}

/** The attribute carrying the call's outcome, as otelconnect-go names it per protocol. */
export function statusAttributes(system: RpcSystem, error: unknown): Attributes {
  if (system === "connect_rpc") {
    return error === undefined ? {} : { "rpc.connect_rpc.error_code": connectCodeName(ConnectError.from(error).code) };
  }
  return { [`rpc.${system}.status_code`]: error === undefined ? 0 : ConnectError.from(error).code };
}

function createRpcMetrics(side: RpcSide, opts: MetricsInterceptorOptions): Interceptor {
  let provider: MeterProvider | undefined;
  let instruments: Instruments | undefined;
  const instrumentsNow = (): Instruments | undefined => {
    const current = opts.meterProvider ?? (metricsState().enabled ? metrics.getMeterProvider() : undefined);
    if (current === undefined) return undefined;
    if (current !== provider || instruments === undefined) {
      provider = current;
      instruments = createInstruments(current, side);
    }
    return instruments;
  };
  // Requests are sent by the client and received by the server; responses the other way round.
  return (next) => async (req) => {
    const m = instrumentsNow();
    if (m === undefined || (opts.filter && !opts.filter(req))) return next(req);
    const started = performance.now();
    const system = detectRpcSystem(req.header, req.requestMethod);
    const attrs = rpcAttributes(system, req.service.typeName, req.method.name);
    const input: DescMessage = req.method.input;
    const output: DescMessage = req.method.output;
    let requests = 0;
    let responses = 0;
    let done = false;
    const finish = (error: unknown) => {
      if (done) return;
      done = true;
      const final = { ...attrs, ...statusAttributes(system, error) };
      m.duration.record(performance.now() - started, final);
      m.requestsPerRpc.record(requests, final);
      m.responsesPerRpc.record(responses, final);
    };

    if (!req.stream) {
      requests = 1;
      const requestSize = protoSize(input, req.message);
      try {
        const res = await next(req);
        responses = 1;
        const final = { ...attrs, ...statusAttributes(system, undefined) };
        m.requestSize.record(requestSize, final);
        m.responseSize.record(protoSize(output, res.message), final);
        finish(undefined);
        return res;
      } catch (err) {
        const final = { ...attrs, ...statusAttributes(system, err) };
        m.requestSize.record(requestSize, final);
        m.responseSize.record(0, final);
        finish(err);
        throw err;
      }
    }

    const onAbort = () => finish(req.signal.reason);
    req.signal.addEventListener("abort", onAbort, { once: true });
    const end = (error: unknown) => {
      req.signal.removeEventListener("abort", onAbort);
      finish(error);
    };
    let res;
    try {
      res = await next({
        ...req,
        message: wrapStream(req.message, {
          message(msg) {
            requests++;
            m.requestSize.record(protoSize(input, msg), attrs);
            return msg;
          },
        }),
      });
    } catch (err) {
      end(err);
      throw err;
    }
    if (!res.stream) {
      end(undefined);
      return res;
    }
    return {
      ...res,
      message: wrapStream(res.message, {
        message(msg) {
          responses++;
          m.responseSize.record(protoSize(output, msg), attrs);
          return msg;
        },
        end: (outcome: StreamOutcome) => end(outcome.kind === "error" ? outcome.error : undefined),
      }),
    };
  };
}
