import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
  type HealthCheckResponse,
} from "../gen/grpc/health/v1/health_pb.js";
import { grpc, grpcClient, serverStream } from "./support/grpc.js";
import { spawnKeymesh } from "./support/process.js";

const dataDir = mkdtempSync(join(tmpdir(), "keymesh-shutdown-"));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

const TIMEOUT_MS = 3_000;

describe("keymesh serve", () => {
  it("drains on SIGTERM: Watch sees NOT_SERVING, the stream ends, the process exits 0 in time", async () => {
    const proc = spawnKeymesh(["serve", "--port", "0"], {
      KEYMESH_DATA_DIR: dataDir,
      KEYMESH_SHUTDOWN_TIMEOUT_MS: String(TIMEOUT_MS),
    });
    try {
      const serving = await proc.waitForLog((l) => l.msg === "keymesh serving");
      expect(serving.services).toEqual(["auth", "keys", "signing", "collection", "executor", "messages", "vault"]);
      const client = grpcClient(String(serving.address));
      const call = serverStream(client, "/grpc.health.v1.Health/Watch", HealthCheckRequestSchema, HealthCheckResponseSchema, {
        service: "keymesh.vault.v1.VaultService",
      });
      const statuses: Status[] = [];
      let first: () => void;
      const gotFirst = new Promise<void>((resolve) => (first = resolve));
      call.on("data", (m: HealthCheckResponse) => {
        statuses.push(m.status);
        first();
      });
      const ended = new Promise<{ code: number }>((resolve) => {
        call.on("error", (e: grpc.ServiceError) => resolve({ code: e.code }));
        call.on("end", () => resolve({ code: grpc.status.OK }));
      });
      await gotFirst;

      const started = Date.now();
      proc.child.kill("SIGTERM");
      const [end, exit] = await Promise.all([ended, proc.exited]);
      const elapsed = Date.now() - started;
      client.close();

      expect(statuses).toEqual([Status.SERVING, Status.NOT_SERVING]);
      expect(end.code).toBe(grpc.status.UNAVAILABLE);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(elapsed).toBeLessThan(TIMEOUT_MS);
      const messages = proc.stdout();
      expect(messages).toContain('"msg":"shutting down"');
      expect(messages).toContain('"msg":"stopped"');
    } finally {
      proc.child.kill("SIGKILL");
    }
  });

  it("runs a subset of the services", async () => {
    const proc = spawnKeymesh(["serve", "vault", "signing", "--port", "0"], { KEYMESH_DATA_DIR: dataDir });
    try {
      const serving = await proc.waitForLog((l) => l.msg === "keymesh serving");
      expect(serving.services).toEqual(["signing", "vault"]);
      proc.child.kill("SIGINT");
      expect(await proc.exited).toEqual({ code: 0, signal: null });
    } finally {
      proc.child.kill("SIGKILL");
    }
  });
});
