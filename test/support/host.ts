import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { loadConfig } from "../../services/shared/config.js";
import { startHost, type Host } from "../../services/shared/server/host.js";
import type { ServiceModule } from "../../services/shared/server/service-module.js";
import { placeholderModules } from "./placeholders.js";

/** A host started in-process on a free port, with its own data directory. */
export interface TestHost {
  readonly host: Host;
  /** "127.0.0.1:<port>" for grpc-js. */
  readonly address: string;
  /** "http://127.0.0.1:<port>" (https with TLS). */
  readonly url: string;
  close(): Promise<void>;
}

/** Options for `startTestHost`. */
export interface TestHostOptions {
  /** Modules to run; default all seven as placeholders (see placeholders.ts). */
  readonly services?: readonly ServiceModule[];
  /** Extra KEYMESH_* variables. */
  readonly env?: Record<string, string>;
  readonly interceptors?: readonly Interceptor[];
  /** Default: the host's own logger at KEYMESH_LOG_LEVEL (silent). */
  readonly logger?: Logger;
}

/** Starts a host on port 0 with a temporary data directory and a silent logger. */
export async function startTestHost(opts: TestHostOptions = {}): Promise<TestHost> {
  const dataDir = mkdtempSync(join(tmpdir(), "keymesh-test-"));
  const config = loadConfig({
    KEYMESH_PORT: "0",
    KEYMESH_DATA_DIR: dataDir,
    KEYMESH_LOG_LEVEL: "silent",
    ...opts.env,
  });
  const services = opts.services ?? placeholderModules();
  const host = await startHost({
    services,
    config,
    interceptors: opts.interceptors ?? [],
    ...(opts.logger === undefined ? {} : { logger: opts.logger }),
  });
  return {
    host,
    address: `127.0.0.1:${host.port}`,
    url: host.url,
    async close() {
      await host.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
