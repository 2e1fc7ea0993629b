import { Writable } from "node:stream";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { SigningService } from "../gen/keymesh/signing/v1/signing_service_pb.js";
import { VaultService } from "../gen/keymesh/vault/v1/vault_service_pb.js";
import { principalKey, requestIdKey, type Principal } from "../services/shared/context.js";
import { createLogger } from "../services/shared/logger.js";
import type { ServiceModule } from "../services/shared/server/service-module.js";
import { startTestHost } from "./support/host.js";
import { placeholderModules } from "./support/placeholders.js";

const TOKEN = "test-service-token-0123456789";

/** A signing module whose Verify reports the caller it saw in its error message. */
function whoModule(seen: Principal[], ids: string[]): ServiceModule {
  return {
    name: "signing",
    desc: SigningService,
    needs: {},
    async register(router) {
      router.service(SigningService, {
        verify(_req, ctx) {
          seen.push(ctx.values.get(principalKey));
          ids.push(ctx.values.get(requestIdKey));
          return {};
        },
      });
    },
  };
}

describe("startHost", () => {
  it("serves only the services it was given (plus health and reflection)", async () => {
    const server = await startTestHost({ services: placeholderModules(["vault"]) });
    try {
      expect(server.host.services).toEqual([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "keymesh.vault.v1.VaultService",
      ]);
      const signing = createClient(SigningService, createGrpcTransport({ baseUrl: server.url }));
      const err = await signing.verify({}).catch((e: unknown) => ConnectError.from(e));
      expect(err).toMatchObject({ code: Code.Unimplemented });
    } finally {
      await server.close();
    }
  });

  it("explains a resource a module did not declare", async () => {
    const sneaky: ServiceModule = {
      name: "vault",
      desc: VaultService,
      needs: {},
      async register(router, ctx) {
        void ctx.db.primary;
        router.service(VaultService, {});
      },
    };
    await expect(startTestHost({ services: [sneaky] })).rejects.toThrow(/needs\.database/);
  });

  it("refuses a module that does not register its service", async () => {
    const lazy: ServiceModule = { name: "vault", desc: VaultService, needs: {}, async register() {} };
    await expect(startTestHost({ services: [lazy] })).rejects.toThrow(/did not register keymesh\.vault\.v1\.VaultService/);
  });

  it("identifies callers: service token → service, root token → admin, none → refused", async () => {
    const seen: Principal[] = [];
    const ids: string[] = [];
    const server = await startTestHost({ services: [whoModule(seen, ids)], env: { KEYMESH_SERVICE_TOKEN: TOKEN } });
    try {
      const signing = createClient(SigningService, createGrpcTransport({ baseUrl: server.url }));
      // Any request that keeps signing_service.proto's rules (a key, a 64-byte signature).
      const probe = { key: { case: "publicKey" as const, value: new Uint8Array(32) }, signature: new Uint8Array(64) };
      const anonymous = await signing.verify(probe).catch((e: unknown) => ConnectError.from(e));
      expect(anonymous).toMatchObject({ code: Code.Unauthenticated });
      await signing.verify(probe, { headers: { authorization: `Bearer ${TOKEN}`, "x-request-id": "abc-1" } });
      await signing.verify(probe, { headers: { authorization: `Bearer ${server.token}` } });
      // Peer clients carry the token themselves, and name the calling process.
      await server.host.clients.signing.verify(probe);
      expect(seen).toEqual([
        { kind: "service", name: "keymesh" },
        { kind: "user", userId: "root", username: "root", admin: true },
        { kind: "service", name: "signing" },
      ]);
      expect(ids[0]).toBe("abc-1");
      // Health stays open whatever the credentials.
      const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
      expect((await health.check({}, { headers: { authorization: "Bearer nonsense" } })).status).toBe(1);
    } finally {
      await server.close();
    }
  });

  it("logs one JSON line per call without message contents", async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString("utf8").split("\n").filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    const logger = createLogger({ level: "debug", destination: sink });
    const server = await startTestHost({ services: placeholderModules(["vault"]), logger });
    try {
      const vault = createClient(VaultService, createGrpcTransport({ baseUrl: server.url }));
      await vault.createSecret({ name: "very-secret-name" }, { headers: { "x-request-id": "req-42", authorization: `Bearer ${server.token}` } }).catch(() => undefined);
      const rpc = lines.find((l) => l.msg === "rpc" && l.requestId === "req-42");
      expect(rpc).toMatchObject({ level: "warn", service: "keymesh.vault.v1.VaultService", method: "CreateSecret", code: "unimplemented" });
      expect(typeof rpc?.durationMs).toBe("number");
      expect(JSON.stringify(lines)).not.toContain("very-secret-name");
      expect(lines.find((l) => l.msg === "keymesh serving")).toMatchObject({ services: ["vault"] });
    } finally {
      await server.close();
    }
  });
});
