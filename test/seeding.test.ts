import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { collectionModule } from "../services/collection/module.js";
import { hostCredentials, startTestHost, type TestHost } from "./support/host.js";

/**
 * Seeding 100k records on the embedded SQLite default is long synchronous work: it runs in
 * one transaction that yields to the event loop between chunks, so other calls are served
 * meanwhile, and a deadline or a cancel ends it with nothing written.
 */
describe("seeding on SQLite", () => {
  let host: TestHost;
  beforeAll(async () => {
    host = await startTestHost({ services: [collectionModule] });
  });
  afterAll(async () => {
    await host?.close();
  });

  it("keeps answering health checks while it runs, and a deadline rolls it back", async () => {
    const transport = createGrpcTransport({ baseUrl: host.url, interceptors: [hostCredentials(host)] });
    const collection = createClient(CollectionService, transport);
    const health = createClient(Health, transport);

    const short = await collection.seedRecords({ count: 100_000 }, { timeoutMs: 50 }).then(
      () => undefined,
      (err: unknown) => ConnectError.from(err),
    );
    expect(short?.code).toBe(Code.DeadlineExceeded);
    // Rolled back whole: no partial seed.
    await new Promise((r) => setTimeout(r, 200));
    expect((await collection.getProgress({})).total).toBe(0n);

    let seedDone = false;
    const seeding = collection.seedRecords({ count: 100_000 }).then((res) => ((seedDone = true), res));
    await new Promise((r) => setTimeout(r, 100));
    const answer = await health.check({ service: "" });
    // The health check came back while the seed was still going.
    expect(seedDone).toBe(false);
    expect(answer.status).toBeGreaterThan(0);
    expect((await seeding).inserted).toBe(100_000);
    expect((await collection.getProgress({})).total).toBe(100_000n);
  });
});
