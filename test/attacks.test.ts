import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../gen/keymesh/auth/v1/auth_service_pb.js";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService, JobState } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { SigningService } from "../gen/keymesh/signing/v1/signing_service_pb.js";
import { loadServiceModules } from "../services/registry.js";
import { bearer, startTestHost, type TestHost } from "./support/host.js";
import { placeholderModules } from "./support/placeholders.js";

/**
 * The attacks that once worked against an open mesh, replayed from outside against every
 * real service in one process: each is refused, and nothing changes behind the refusal.
 */

const PASSWORD = "mallory-password-123";
const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => ConnectError.from(e));

let server: TestHost;
let userToken: string;

function clients(interceptors: Interceptor[]) {
  const transport = createGrpcTransport({ baseUrl: server.url, interceptors });
  return {
    keys: createClient(KeyManagementService, transport),
    signing: createClient(SigningService, transport),
    collection: createClient(CollectionService, transport),
    executor: createClient(ExecutorService, transport),
  };
}

let root: ReturnType<typeof clients>;
let attackers: [string, ReturnType<typeof clients>][];

beforeAll(async () => {
  server = await startTestHost({ services: await loadServiceModules() });
  root = clients([bearer(server.token)]);
  await root.collection.seedRecords({ count: 150 });
  await root.keys.createKeyringKeys({ count: 3 });
  const auth = createClient(AuthService, createGrpcTransport({ baseUrl: server.url }));
  await auth.register({ username: "mallory", password: PASSWORD });
  userToken = (await auth.login({ username: "mallory", password: PASSWORD })).token;
  attackers = [
    ["no credentials", clients([])],
    ["a forged token", clients([bearer("kmt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")])],
    ["a wrong service token", clients([bearer(`${server.serviceToken.slice(0, -1)}x`)])],
    ["a logged-in user", clients([bearer(userToken)])],
  ];
}, 120_000);

afterAll(async () => {
  await server?.close();
});

const refused = (who: string) => (who === "a logged-in user" ? Code.PermissionDenied : Code.Unauthenticated);

describe("replayed attacks", () => {
  it("cannot lease a key and sign a payload of its choice", async () => {
    const keyId = (await root.keys.listKeyringKeys({})).keys[0]!.keyId;
    for (const [who, c] of attackers) {
      expect(await errorOf(c.keys.acquireKeyLease({ holder: "mallory", ttlMs: 600_000 })), who).toMatchObject({ code: refused(who) });
      const sign = c.signing.signBatch({ batchId: "evil", keyId, fence: 1n, records: { ids: [1n], payloadLengths: [11], payloads: Buffer.from("pay mallory") } });
      expect(await errorOf(sign), who).toMatchObject({ code: refused(who) });
      const stream = (async () => {
        async function* one() {
          yield { batch: { batchId: "evil", keyId, fence: 1n, records: { ids: [1n], payloadLengths: [11], payloads: Buffer.from("pay mallory") } } };
        }
        for await (const _ of c.signing.signStream(one())) break;
      })();
      expect(await errorOf(stream), who).toMatchObject({ code: refused(who) });
    }
    // Admins run jobs; they do not get to sign arbitrary payloads either.
    expect(await errorOf(root.keys.acquireKeyLease({ holder: "root", ttlMs: 1000 }))).toMatchObject({ code: Code.PermissionDenied });
  });

  it("cannot fetch a sealed private key", async () => {
    const keyId = (await root.keys.listKeyringKeys({})).keys[0]!.keyId;
    for (const [who, c] of [...attackers, ["an admin", root] as [string, ReturnType<typeof clients>]]) {
      const err = await errorOf(c.keys.getWrappedSigningKey({ keyId, fence: 1n }));
      expect(err, who).toMatchObject({ code: who === "an admin" ? Code.PermissionDenied : refused(who) });
    }
  });

  it("cannot delete or seed records", async () => {
    for (const [who, c] of attackers) {
      expect(await errorOf(c.collection.deleteRecords({})), who).toMatchObject({ code: refused(who) });
      expect(await errorOf(c.collection.seedRecords({ count: 1000 })), who).toMatchObject({ code: refused(who) });
    }
    expect(Number((await root.collection.getProgress({})).total)).toBe(150);
  });

  it("cannot hold the keys to stall jobs: a job still signs everything", { timeout: 120_000 }, async () => {
    for (const [who, c] of attackers) {
      for (let i = 0; i < 3; i++) {
        expect(await errorOf(c.keys.acquireKeyLease({ holder: `staller-${i}`, ttlMs: 600_000 })), who).toMatchObject({ code: refused(who) });
      }
    }
    let state = JobState.UNSPECIFIED;
    for await (const res of root.executor.runJob({ spec: { batchSize: 50, concurrency: 2, leaseTtlMs: 5_000 } })) state = res.progress?.state ?? state;
    expect(state).toBe(JobState.SUCCEEDED);
    const progress = await root.collection.getProgress({});
    expect(Number(progress.signed)).toBe(150);
  });

  it("cannot run, watch or read jobs as a user", async () => {
    const [, user] = attackers.find(([who]) => who === "a logged-in user")!;
    const run = (async () => {
      for await (const _ of user.executor.runJob({ spec: { batchSize: 10 } })) break;
    })();
    expect(await errorOf(run)).toMatchObject({ code: Code.PermissionDenied });
    expect(await errorOf(user.executor.getJob({ jobId: "any" }))).toMatchObject({ code: Code.PermissionDenied });
  });

  it("refuses a peer process presenting a wrong KEYMESH_SERVICE_TOKEN", async () => {
    const peer = await startTestHost({
      services: placeholderModules(["executor"]),
      env: { KEYMESH_SERVICE_TOKEN: "kms_not-the-mesh-token-000000", KEYMESH_KEYS_URL: server.url },
    });
    try {
      const keysClient: Client<typeof KeyManagementService> = peer.host.clients.keys;
      expect(await errorOf(keysClient.acquireKeyLease({ holder: "impostor", ttlMs: 1000 }))).toMatchObject({ code: Code.Unauthenticated });
      expect(await errorOf(keysClient.listKeyringKeys({}))).toMatchObject({ code: Code.Unauthenticated });
    } finally {
      await peer.close();
    }
  });
});
