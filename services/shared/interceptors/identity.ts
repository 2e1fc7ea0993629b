import { randomBytes } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { PrincipalKind } from "../../../gen/keymesh/auth/v1/auth_service_pb.js";
import type { PeerClients } from "../clients.js";
import { SERVICE_NAMES } from "../../registry.js";
import { ConfigError, serviceUrlVariable, type Config } from "../config.js";
import type { Principal } from "../context.js";
import { createAccessInterceptor } from "./access.js";

/**
 * How a host knows its callers: which service token it sends and accepts, the development
 * root token if any, and where session tokens are checked (the auth service's own store when
 * auth runs in this process, otherwise a WhoAmI call to the auth service at KEYMESH_AUTH_URL
 * with the caller's token).
 */

/** Resolves a session token to its user (undefined: unknown, expired or revoked). */
export type Authenticate = (token: string) => Promise<Principal | undefined>;

/** The identity side of a host. */
export interface HostIdentity {
  /** The token this process sends to its peers (and accepts from them). */
  readonly serviceToken: string;
  /** The access interceptor for the host's router. */
  readonly interceptor: Interceptor;
  /** Makes session checks local: called when the auth service runs in this process. */
  useLocalSessions(authenticate: Authenticate): void;
}

/** Options for `createHostIdentity`. */
export interface HostIdentityOptions {
  readonly config: Config;
  /** The host's peer clients, created lazily (they need the service token first). */
  readonly clients: () => PeerClients;
  /** The development root token to accept (see services/shared/root-token.ts). */
  readonly rootToken?: string;
}

/**
 * Refuses configurations in which a credential would be missing or exposed: peers in other
 * processes need `KEYMESH_SERVICE_TOKEN`, and with TLS configured no peer may be reached
 * over plaintext (the token would cross it).
 */
export function checkPeerSecurity(config: Config): void {
  for (const name of SERVICE_NAMES) {
    const url = config.serviceUrls[name];
    if (url === undefined) continue;
    const variable = serviceUrlVariable(name);
    if (config.serviceToken === undefined) {
      throw new ConfigError(
        "KEYMESH_SERVICE_TOKEN",
        `a shared secret for service-to-service calls: ${variable} points to another process, which refuses calls without it`,
      );
    }
    if ((config.tls !== undefined || config.tlsCaFile !== undefined) && url.startsWith("http:")) {
      throw new ConfigError(variable, "an https:// URL: TLS is configured here, and the service token must not cross a plaintext hop");
    }
  }
}

/** Creates the identity of a host process. */
export function createHostIdentity(opts: HostIdentityOptions): HostIdentity {
  checkPeerSecurity(opts.config);
  // Without a configured token every peer is this process itself: a secret that never leaves
  // it serves for its calls to itself, so a single-process mesh needs no credential set up.
  const serviceToken = opts.config.serviceToken ?? randomBytes(32).toString("base64url");
  let local: Authenticate | undefined;

  const remote: Authenticate = async (token) => {
    try {
      const me = await opts.clients().auth.whoAmI({}, { headers: { authorization: `Bearer ${token}` }, timeoutMs: 5_000 });
      if (me.kind !== PrincipalKind.USER) return undefined;
      return { kind: "user", userId: me.principalId, username: me.username, admin: me.admin };
    } catch (err) {
      if (ConnectError.from(err).code === Code.Unauthenticated) return undefined;
      throw new ConnectError("cannot check the credentials right now: the auth service did not answer", Code.Unavailable);
    }
  };

  const none: Authenticate = async () => undefined;
  const interceptor = createAccessInterceptor({
    serviceTokens: [serviceToken],
    ...(opts.rootToken === undefined ? {} : { rootToken: opts.rootToken }),
    // Sessions are checked where the auth service is: in this process, or at KEYMESH_AUTH_URL.
    // With neither there are no sessions to find, and a session token is simply unknown.
    authenticate: (token) => (local ?? (opts.config.serviceUrls.auth === undefined ? none : remote))(token),
  });
  return {
    serviceToken,
    interceptor,
    useLocalSessions(authenticate) {
      local = authenticate;
    },
  };
}
