import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
  HealthListRequestSchema,
  HealthListResponseSchema,
  type HealthCheckResponse,
} from "../gen/grpc/health/v1/health_pb.js";
import { grpc, grpcClient, serverStream, unary } from "./support/grpc.js";
import { startTestHost, type TestHost } from "./support/host.js";

const SERVICES = [
  "keymesh.auth.v1.AuthService",
  "keymesh.keys.v1.KeyManagementService",
  "keymesh.signing.v1.SigningService",
  "keymesh.collection.v1.CollectionService",
  "keymesh.executor.v1.ExecutorService",
  "keymesh.messages.v1.MessagesService",
  "keymesh.vault.v1.VaultService",
];

let server: TestHost;
let client: grpc.Client;

beforeAll(async () => {
  server = await startTestHost();
  client = grpcClient(server.address);
});

afterAll(async () => {
  client.close();
  await server.close();
});

const check = (service: string) =>
  unary(client, "/grpc.health.v1.Health/Check", HealthCheckRequestSchema, HealthCheckResponseSchema, { service });

/** Collects a Watch stream's statuses, resolving each time one arrives. */
function watch(service: string) {
  const call = serverStream(client, "/grpc.health.v1.Health/Watch", HealthCheckRequestSchema, HealthCheckResponseSchema, { service });
  const seen: Status[] = [];
  let wake: (() => void) | undefined;
  call.on("data", (m: HealthCheckResponse) => {
    seen.push(m.status);
    wake?.();
  });
  call.on("error", () => undefined);
  const next = async (count: number) => {
    while (seen.length < count) await new Promise<void>((resolve) => (wake = resolve));
    return seen[count - 1];
  };
  return { call, seen, next };
}

describe("grpc.health.v1.Health", () => {
  it("reports the whole server and every service as SERVING", async () => {
    expect((await check("")).status).toBe(Status.SERVING);
    for (const name of SERVICES) expect((await check(name)).status, name).toBe(Status.SERVING);
  });

  it("answers NOT_FOUND for an unknown service", async () => {
    await expect(check("keymesh.nope.v1.Nope")).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it("lists every status", async () => {
    const res = await unary(client, "/grpc.health.v1.Health/List", HealthListRequestSchema, HealthListResponseSchema, {});
    expect(Object.keys(res.statuses).sort()).toEqual(["", ...SERVICES].sort());
  });

  it("streams status changes on Watch until the client cancels", async () => {
    const w = watch("keymesh.vault.v1.VaultService");
    expect(await w.next(1)).toBe(Status.SERVING);
    server.host.health.setStatus("keymesh.vault.v1.VaultService", Status.NOT_SERVING);
    expect(await w.next(2)).toBe(Status.NOT_SERVING);
    server.host.health.setStatus("keymesh.vault.v1.VaultService", Status.SERVING);
    expect(await w.next(3)).toBe(Status.SERVING);
    const ended = new Promise((resolve) => w.call.on("error", resolve));
    w.call.cancel();
    expect(await ended).toMatchObject({ code: grpc.status.CANCELLED });
  });

  it("answers Watch for an unknown service with SERVICE_UNKNOWN", async () => {
    const w = watch("keymesh.nope.v1.Nope");
    expect(await w.next(1)).toBe(Status.SERVICE_UNKNOWN);
    w.call.cancel();
  });
});
