import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { Access } from "../../gen/keymesh/auth/v1/access_pb.js";
import { loadConfig } from "../../services/shared/config.js";
import { accessOf } from "../../services/shared/interceptors/access.js";
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
  /** A root (admin) token the host accepts, as `keymesh serve --dev` would. */
  readonly token: string;
  /** The host's service token (KEYMESH_SERVICE_TOKEN). */
  readonly serviceToken: string;
  close(): Promise<void>;
}

/**
 * A client interceptor presenting whichever of a test host's credentials each method's access
 * policy asks for: the service token for service methods, the root (admin) token otherwise.
 */
export function hostCredentials(server: Pick<TestHost, "token" | "serviceToken">): Interceptor {
  return (next) => (req) => {
    const token = accessOf(req.method) === Access.SERVICE ? server.serviceToken : server.token;
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/** A client interceptor sending `authorization: Bearer <token>`. */
export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
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
    KEYMESH_SERVICE_TOKEN: `kms_${randomBytes(24).toString("base64url")}`,
    KEYMESH_PORT: "0",
    KEYMESH_DATA_DIR: dataDir,
    KEYMESH_LOG_LEVEL: "silent",
    ...opts.env,
  });
  const services = opts.services ?? placeholderModules();
  const token = `kmr_${randomBytes(32).toString("base64url")}`;
  const host = await startHost({
    services,
    config,
    rootToken: token,
    interceptors: opts.interceptors ?? [],
    ...(opts.logger === undefined ? {} : { logger: opts.logger }),
  });
  return {
    host,
    address: `127.0.0.1:${host.port}`,
    url: host.url,
    token,
    serviceToken: config.serviceToken!,
    async close() {
      await host.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
