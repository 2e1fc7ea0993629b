/**
 * The Prometheus scrape endpoint: `GET /metrics` on its own port (KEYMESH_METRICS_PORT), so
 * the service port stays gRPC/Connect only. Plain HTTP/1.1, text exposition format.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { prometheusExporter, startMetrics } from "./metrics-sdk.js";

/** A running scrape endpoint. */
export interface MetricsServer {
  readonly port: number;
  /** e.g. http://127.0.0.1:9464/metrics */
  readonly url: string;
  close(): Promise<void>;
}

/** Starts the metrics SDK with a Prometheus reader (if not started yet) and serves it. */
export async function startMetricsServer(opts: { host: string; port: number }): Promise<MetricsServer> {
  const state = await startMetrics({ prometheus: true });
  const exporter = prometheusExporter();
  if (exporter === undefined) {
    throw new Error(`KEYMESH_METRICS_PORT is set but metrics are off (${state.reason ?? "the SDK started without a Prometheus reader"})`);
  }
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && path === "/metrics") {
      exporter.getMetricsRequestHandler(req, res);
      return;
    }
    res.statusCode = 404;
    res.setHeader("content-type", "text/plain");
    res.end("keymesh serves metrics at /metrics on this port\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = opts.host === "0.0.0.0" || opts.host === "::" ? "127.0.0.1" : opts.host.includes(":") ? `[${opts.host}]` : opts.host;
  return {
    port,
    url: `http://${host}:${port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
