import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckRequestSchema, HealthCheckResponseSchema } from "../gen/grpc/health/v1/health_pb.js";
import {
  SigningService,
  SignStreamRequestSchema,
  VerifyRequestSchema,
  VerifyResponseSchema,
} from "../gen/keymesh/signing/v1/signing_service_pb.js";
import type { ServiceModule } from "../services/shared/server/service-module.js";
import { grpc, grpcClient, serverStream, unary } from "./support/grpc.js";
import { bearer, startTestHost, type TestHost } from "./support/host.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A test-only signing service whose handlers take long and ignore their signal. */
const slowModule: ServiceModule = {
  name: "signing",
  desc: SigningService,
  needs: {},
  async register(router) {
    router.service(SigningService, {
      async verify() {
        await sleep(3_000);
        return {};
      },
      async *signStream(requests) {
        for await (const _ of requests) await sleep(3_000);
      },
    });
  },
};

let server: TestHost;
let client: grpc.Client;

beforeAll(async () => {
  server = await startTestHost({ services: [slowModule], env: { KEYMESH_SHUTDOWN_TIMEOUT_MS: "1000" } });
  client = grpcClient(server.address);
});

afterAll(async () => {
  client.close();
  await server.close();
});

const deadline = (ms: number) => ({ deadline: new Date(Date.now() + ms) });

/** Call metadata with the test host's root token. */
function auth(): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${server.token}`);
  return metadata;
}
/** A Verify request that keeps signing_service.proto's rules, so it reaches the slow handler. */
const VERIFY = { key: { case: "publicKey" as const, value: new Uint8Array(32) }, signature: new Uint8Array(64) };

describe("client deadlines", () => {
  it("end a slow unary call with DEADLINE_EXCEEDED even when the handler ignores its signal", async () => {
    const started = Date.now();
    await expect(
      unary(client, "/keymesh.signing.v1.SigningService/Verify", VerifyRequestSchema, VerifyResponseSchema, VERIFY, deadline(200), auth()),
    ).rejects.toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
    expect(Date.now() - started).toBeLessThan(1_500);
    // The server lets go of the call at its own deadline, long before the 3-s handler returns
    // (its timer starts when it reads the call, so it may fire a little after the client's).
    const released = Date.now();
    while (server.host.inFlight() !== 0 && Date.now() - released < 1_000) await sleep(10);
    expect(server.host.inFlight()).toBe(0);
  });

  it("end a slow bidi stream with DeadlineExceeded (connect-es client, grpc-timeout)", async () => {
    const signing = createClient(SigningService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(server.serviceToken)] }));
    const started = Date.now();
    const err = await (async () => {
      async function* one() {
        yield create(SignStreamRequestSchema, {});
      }
      for await (const _ of signing.signStream(one(), { timeoutMs: 200 })) {
        // no responses expected
      }
    })().catch((e: unknown) => ConnectError.from(e));
    expect(err).toMatchObject({ code: Code.DeadlineExceeded });
    expect(Date.now() - started).toBeLessThan(1_500);
  });

  it("end Health.Watch at its deadline", async () => {
    const call = serverStream(client, "/grpc.health.v1.Health/Watch", HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "" }, deadline(300));
    const statuses: number[] = [];
    call.on("data", (m: { status: number }) => statuses.push(m.status));
    const err = await new Promise((resolve) => call.on("error", resolve));
    expect(err).toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
    expect(statuses).toEqual([1]);
  });

  it("keep the server serving afterwards", async () => {
    const res = await unary(client, "/grpc.health.v1.Health/Check", HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "" });
    expect(res.status).toBe(1);
  });
});

describe("shutdown with a call that ignores its signal", () => {
  it("aborts the call after the grace period and finishes within the budget", async () => {
    const call = unary(client, "/keymesh.signing.v1.SigningService/Verify", VerifyRequestSchema, VerifyResponseSchema, VERIFY, {}, auth());
    const outcome = call.then(
      () => "ok",
      (e: { code: number }) => e.code,
    );
    await sleep(100);
    expect(server.host.inFlight()).toBe(1);
    const started = Date.now();
    await server.host.close();
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(await outcome).toBe(grpc.status.UNAVAILABLE);
  });
});
