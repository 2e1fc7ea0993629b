import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import {
  Health,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
  type HealthCheckResponse,
} from "../../../gen/grpc/health/v1/health_pb.js";
import { shuttingDownError } from "../errors.js";

export { HealthCheckResponse_ServingStatus as ServingStatus } from "../../../gen/grpc/health/v1/health_pb.js";

/**
 * The standard gRPC health service (`grpc.health.v1.Health`): Check, Watch and List for each
 * running service by full name and for "" (the whole server). During shutdown every status
 * turns NOT_SERVING, watchers receive that, and then their streams end.
 */
export interface HealthService {
  /** Sets one service's status ("" is the whole server); watchers are told of changes. */
  setStatus(service: string, status: ServingStatus): void;
  /** The current status, or undefined for an unknown service. */
  status(service: string): ServingStatus | undefined;
  /** Marks everything NOT_SERVING and ends every Watch stream; later changes are ignored. */
  shutdown(): void;
  /** Registers `grpc.health.v1.Health` on a router. */
  register(router: ConnectRouter): void;
}

/** Options for `createHealthService`. */
export interface HealthServiceOptions {
  /** Full names of the services to report, e.g. "keymesh.vault.v1.VaultService". */
  readonly services: readonly string[];
  /** Their initial status (default SERVING). */
  readonly initialStatus?: ServingStatus;
}

type Listener = () => void;

/** Creates the health service for a server hosting `opts.services`. */
export function createHealthService(opts: HealthServiceOptions): HealthService {
  const initial = opts.initialStatus ?? ServingStatus.SERVING;
  const statuses = new Map<string, ServingStatus>([["", initial], ...opts.services.map((s) => [s, initial] as const)]);
  const listeners = new Set<Listener>();
  let shutDown = false;

  const notify = () => {
    for (const l of listeners) l();
  };
  const response = (status: ServingStatus): HealthCheckResponse => create(HealthCheckResponseSchema, { status });

  const service: HealthService = {
    setStatus(name, status) {
      if (shutDown) return;
      if (statuses.get(name) === status) return;
      statuses.set(name, status);
      notify();
    },
    status(name) {
      return statuses.get(name);
    },
    shutdown() {
      if (shutDown) return;
      for (const name of statuses.keys()) statuses.set(name, ServingStatus.NOT_SERVING);
      shutDown = true;
      notify();
    },
    register(router) {
      router.service(Health, {
        check(req) {
          const status = statuses.get(req.service);
          if (status === undefined) throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
          return response(status);
        },
        list() {
          const all: Record<string, HealthCheckResponse> = {};
          for (const [name, status] of statuses) all[name] = response(status);
          return { statuses: all };
        },
        async *watch(req, ctx) {
          // Each change is a wake-up; the watcher then reports the latest status, if it differs.
          const changes = createWritableIterable<void>();
          const listener: Listener = () => void changes.write().catch(() => undefined);
          const onAbort = () => changes.close();
          listeners.add(listener);
          ctx.signal.addEventListener("abort", onAbort);
          try {
            let last: ServingStatus | undefined;
            const wakeUps = changes[Symbol.asyncIterator]();
            do {
              if (ctx.signal.aborted) return;
              const current = statuses.get(req.service) ?? ServingStatus.SERVICE_UNKNOWN;
              if (current !== last) {
                last = current;
                yield response(current);
              }
              if (shutDown) throw shuttingDownError();
            } while ((await wakeUps.next()).done !== true);
          } finally {
            listeners.delete(listener);
            ctx.signal.removeEventListener("abort", onAbort);
          }
        },
      });
    },
  };
  return service;
}
