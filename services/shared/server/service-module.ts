import type { ConnectRouter } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import type { Config } from "../config.js";
import type { Database } from "../storage/database.js";
import type { MigrationModule } from "../storage/migrations/index.js";
import type { Coordinator } from "../coordination/types.js";
import type { PeerClients } from "../clients.js";
import type { Principal } from "../context.js";

/**
 * What the host hands a service when it starts: configuration, shared resources (created
 * lazily, only when some running service needs them) and clients for its peers.
 */
export interface ServiceContext {
  readonly config: Config;
  readonly logger: Logger;
  /** The database; only present when the module declared `needs.database`. */
  readonly db: Database;
  /** Leases and queues; only present when the module declared `needs.coordinator`. */
  readonly coordinator: Coordinator;
  /** Generated clients for the other services, at their configured URLs. */
  readonly clients: PeerClients;
  /** Aborted when the process begins shutting down. */
  readonly shutdown: AbortSignal;
}

/** A running service's hooks into the host's lifecycle. */
export interface ServiceInstance {
  /** Called after the server stopped accepting calls and drained, before pools close. */
  close?(): Promise<void>;
  /**
   * Resolves a session token to its user (the auth service provides this): the host then
   * checks sessions in-process instead of asking the auth service over the network.
   */
  authenticate?(token: string): Promise<(Principal & { kind: "user" }) | undefined>;
}

/**
 * A service as the host sees it: its generated descriptor, the resources it needs and a
 * function that registers its handlers on a router.
 */
export interface ServiceModule {
  /** Short name used on the command line and in config: "vault", "keys", ... */
  readonly name: string;
  /** The generated service descriptor (its typeName is the public contract). */
  readonly desc: DescService;
  /** Shared resources to create before `register` runs. */
  readonly needs: { readonly database?: boolean; readonly coordinator?: boolean };
  /**
   * The migrations of the tables this service owns, oldest first (names like "0001_jobs";
   * the runner qualifies them with the service's name). No service touches another's tables.
   */
  readonly migrations?: readonly MigrationModule[];
  /** Registers the handlers; may start background work tied to `ctx.shutdown`. */
  register(router: ConnectRouter, ctx: ServiceContext): Promise<ServiceInstance | void>;
}
