import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Access } from "../gen/keymesh/auth/v1/access_pb.js";
import { AuthService } from "../gen/keymesh/auth/v1/auth_service_pb.js";
import { createAuthModule } from "../services/auth/module.js";
import { SERVICE_NAMES, SERVICES } from "../services/registry.js";
import { accessOf } from "../services/shared/interceptors/access.js";
import { bearer, startTestHost, type TestHost } from "./support/host.js";
import { placeholderModules } from "./support/placeholders.js";

/**
 * Walks every method of every keymesh service, as the generated descriptors list them, and
 * calls each one over gRPC as each kind of caller. The handlers behind are placeholders
 * (Unimplemented) except AuthService's real one: what is checked is the access interceptor,
 * which answers before any handler runs.
 */

const DESCRIPTORS: readonly DescService[] = Object.values(SERVICES).map((s) => s.desc);
const METHODS: readonly DescMethod[] = DESCRIPTORS.flatMap((s) => s.methods);

let server: TestHost;
let userToken: string;
let adminSession: string;

/** Calls any method with an empty request; resolves to the code it ended with. */
async function codeOf(method: DescMethod, interceptors: Interceptor[]): Promise<Code | "ok"> {
  const outcome = await callOf(method, interceptors);
  return outcome === "ok" ? "ok" : outcome.code;
}

/** Calls any method with an empty request; resolves to "ok" or the error. */
async function callOf(method: DescMethod, interceptors: Interceptor[]): Promise<ConnectError | "ok"> {
  const transport = createGrpcTransport({ baseUrl: server.url, interceptors });
  const client = createClient(method.parent, transport) as unknown as Record<string, (...args: unknown[]) => unknown>;
  const call = client[method.localName]!;
  const empty = create(method.input);
  async function* one() {
    yield empty;
  }
  try {
    switch (method.methodKind) {
      case "unary":
        await call(empty);
        break;
      case "server_streaming":
        for await (const _ of call(empty) as AsyncIterable<unknown>) break;
        break;
      case "client_streaming":
        await call(one());
        break;
      case "bidi_streaming":
        for await (const _ of call(one()) as AsyncIterable<unknown>) break;
        break;
    }
    return "ok";
  } catch (err) {
    return ConnectError.from(err);
  }
}

async function login(): Promise<string> {
  const client = createClient(AuthService, createGrpcTransport({ baseUrl: server.url }));
  return (await client.login({ username: "walker", password: "walker-password-123" })).token;
}

const named = (m: DescMethod) => `${m.parent.typeName}/${m.name}`;
const refusals = new Set<Code | "ok">([Code.Unauthenticated, Code.PermissionDenied]);

beforeAll(async () => {
  const auth = createAuthModule({ cost: { log2N: 14, r: 8, p: 1 } });
  server = await startTestHost({ services: [auth, ...placeholderModules(SERVICE_NAMES.filter((n) => n !== "auth"))] });
  const client = createClient(AuthService, createGrpcTransport({ baseUrl: server.url }));
  await client.register({ username: "walker", password: "walker-password-123" });
  userToken = await login();
  adminSession = server.token;
}, 60_000);

afterAll(async () => {
  await server?.close();
});

describe("the access policy", () => {
  it("is declared on every method of every keymesh service", () => {
    expect(METHODS.length).toBeGreaterThan(50);
    const undeclared = METHODS.filter((m) => accessOf(m) === Access.UNSPECIFIED).map(named);
    expect(undeclared, "add `option (keymesh.auth.v1.access) = ACCESS_…;` to these rpcs").toEqual([]);
  });

  it("refuses anonymous callers everywhere but on public methods", { timeout: 120_000 }, async () => {
    for (const method of METHODS) {
      const outcome = await callOf(method, []);
      // Public methods reach their handler (Login then refuses the empty password itself).
      if (accessOf(method) === Access.PUBLIC) expect(outcome === "ok" ? "ok" : outcome.rawMessage, named(method)).not.toMatch(/needs credentials/);
      else expect(outcome === "ok" ? "ok" : outcome.code, named(method)).toBe(Code.Unauthenticated);
    }
  });

  it("refuses a forged or wrong service token with Unauthenticated", { timeout: 120_000 }, async () => {
    for (const token of ["kms_forged-service-token-000000", `${server.serviceToken}x`, "kmt_notasessiontoken"]) {
      for (const method of METHODS.filter((m) => accessOf(m) !== Access.PUBLIC)) {
        expect(await codeOf(method, [bearer(token)]), `${named(method)} with ${token.slice(0, 8)}…`).toBe(Code.Unauthenticated);
      }
    }
  });

  it("refuses users on service and admin methods, and lets them through to user methods", { timeout: 120_000 }, async () => {
    for (const method of METHODS) {
      // Logout really revokes its session: give it one of its own.
      const token = method === AuthService.method.logout ? await login() : userToken;
      const code = await codeOf(method, [bearer(token)]);
      const access = accessOf(method);
      if (access === Access.SERVICE || access === Access.ADMIN) expect(code, named(method)).toBe(Code.PermissionDenied);
      else if (access === Access.USER) expect(refusals.has(code), `${named(method)} answered ${Code[code as Code] ?? code}`).toBe(false);
    }
  });

  it("keeps service methods for services and admin methods for admins", { timeout: 120_000 }, async () => {
    // Public methods answer for themselves (Login with no password is Unauthenticated).
    for (const method of METHODS.filter((m) => accessOf(m) !== Access.PUBLIC)) {
      const access = accessOf(method);
      const asService = await codeOf(method, [bearer(server.serviceToken)]);
      const asAdmin = await codeOf(method, [bearer(adminSession)]);
      if (access === Access.ADMIN) expect(asService, `${named(method)} as a service`).toBe(Code.PermissionDenied);
      else expect(refusals.has(asService), `${named(method)} as a service`).toBe(false);
      if (access === Access.SERVICE) expect(asAdmin, `${named(method)} as an admin`).toBe(Code.PermissionDenied);
      else expect(refusals.has(asAdmin), `${named(method)} as an admin`).toBe(false);
    }
  });
});
