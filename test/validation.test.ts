/**
 * Request validation declared in the protos (protovalidate rules, enforced by the host's
 * validation interceptor), through a real host running the real services, over gRPC (HTTP/2)
 * and Connect JSON (HTTP/1.1), and through buf curl as a person would call it.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { create, getOption, type DescMessage, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { createValidator } from "@bufbuild/protovalidate";
import { RE2JS } from "@bufbuild/re2";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { field as fieldRules, ViolationsSchema } from "../gen/buf/validate/validate_pb.js";
import { AuthService } from "../gen/keymesh/auth/v1/auth_service_pb.js";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { SigningService } from "../gen/keymesh/signing/v1/signing_service_pb.js";
import { VaultService } from "../gen/keymesh/vault/v1/vault_service_pb.js";
import { SERVICES } from "../services/registry.js";
import { matchPattern, VALIDATOR_OPTIONS } from "../services/shared/interceptors/validation.js";
import { loadServiceModules } from "../services/registry.js";
import { hostCredentials, startTestHost, type TestHost } from "./support/host.js";

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

let server: TestHost;

beforeAll(async () => {
  server = await startTestHost({ services: await loadServiceModules() });
});

afterAll(async () => {
  await server?.close();
});

/** The ConnectError a call fails with (fails the test when the call succeeds). */
async function failure(call: Promise<unknown> | (() => Promise<unknown>)): Promise<ConnectError> {
  try {
    await (typeof call === "function" ? call() : call);
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call succeeded");
}

/** Drains a server stream (RunJob) so that its error surfaces. */
const drain = (stream: AsyncIterable<unknown>) => async () => {
  for await (const _ of stream) void _;
};

const transports: Record<string, () => Transport> = {
  // Callers the access policy lets through: requests are validated only after that check.
  "gRPC over HTTP/2": () => createGrpcTransport({ baseUrl: server.url, interceptors: [hostCredentials(server)] }),
  "Connect JSON over HTTP/1.1": () =>
    createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", useBinaryFormat: false, interceptors: [hostCredentials(server)] }),
};

describe.each(Object.keys(transports))("%s", (name) => {
  let keys: Client<typeof KeyManagementService>;
  let collection: Client<typeof CollectionService>;
  let signing: Client<typeof SigningService>;
  let executor: Client<typeof ExecutorService>;
  beforeAll(() => {
    const transport = transports[name]!();
    keys = createClient(KeyManagementService, transport);
    collection = createClient(CollectionService, transport);
    signing = createClient(SigningService, transport);
    executor = createClient(ExecutorService, transport);
  });

  /** Expects InvalidArgument whose message starts with the field path, and the same path in the details. */
  async function expectViolation(call: Promise<unknown> | (() => Promise<unknown>), field: string, says: RegExp) {
    const err = await failure(call);
    expect(err.code, err.message).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toMatch(new RegExp(`^${field.replace(/[[\].]/g, "\\$&")}: `));
    expect(err.rawMessage).toMatch(says);
    // Programs get the same facts as data: a buf.validate.Violations detail.
    const [violations] = err.findDetails(ViolationsSchema);
    const path = violations?.violations[0]?.field?.elements.map((e) => e.fieldName + (e.subscript.case === "index" ? `[${e.subscript.value}]` : "")).join(".");
    expect(path).toBe(field);
  }

  it("collection: counts, sizes, ids and signature lengths", async () => {
    const before = await collection.getProgress({});
    await expectViolation(collection.seedRecords({ count: 0 }), "count", /between|greater than or equal to 1/);
    await expectViolation(collection.seedRecords({ count: 10_000_001 }), "count", /less than or equal to 10000000/);
    await expectViolation(collection.seedRecords({ count: 5, payloadSize: 1025 }), "payload_size", /less than or equal to 1024/);
    expect((await collection.getProgress({})).total).toBe(before.total);
    await expectViolation(collection.claimBatch({ claimant: "", size: 5, claimTtlMs: 5000 }), "claimant", /at least 1 characters/);
    await expectViolation(collection.claimBatch({ claimant: "t", size: 10_001, claimTtlMs: 5000 }), "size", /10000/);
    await expectViolation(collection.claimBatch({ claimant: "t", size: 5, claimTtlMs: 10 }), "claim_ttl_ms", /1000/);
    const commit = { claimId: "c", batchId: "b", keyId: "k-1", fence: 1n, jobId: "j", leaseId: "l", leaseToken: "t", signatures: { recordIds: [1n], signatures: new Uint8Array(64) } };
    await expectViolation(collection.commitBatch({ ...commit, signatures: { recordIds: [1n], signatures: new Uint8Array(63) } }), "signatures", /64 bytes per record id/);
    await expectViolation(collection.commitBatch({ ...commit, signatures: undefined }), "signatures", /required/);
    await expectViolation(collection.commitBatch({ ...commit, fence: 0n }), "fence", /greater than 0/);
    await expectViolation(collection.commitBatch({ ...commit, batchId: "b".repeat(65) }), "batch_id", /at most 64 characters/);
    await expectViolation(collection.commitBatch({ ...commit, claimId: "c".repeat(65) }), "claim_id", /at most 64 characters/);
    await expectViolation(collection.commitBatch({ ...commit, jobId: "j".repeat(65) }), "job_id", /at most 64 characters/);
    await expectViolation(collection.commitBatch({ ...commit, leaseId: "" }), "lease_id", /at least 1 characters/);
    await expectViolation(collection.commitBatch({ ...commit, leaseToken: "t".repeat(513) }), "lease_token", /at most 512 characters/);
    // Per-record limits of packed blocks are checked as the handler unpacks them (a rule per item
    // would cost more than the rest of the validation): the same code, a message naming the item.
    const negative = await failure(collection.commitBatch({ ...commit, signatures: { recordIds: [-1n], signatures: new Uint8Array(64) } }));
    expect([negative.code, negative.rawMessage]).toEqual([Code.InvalidArgument, "signatures.record_ids[0]: -1 is not between 0 and 9007199254740991"]);
    await expectViolation(collection.getRecord({ id: MAX_SAFE + 1n }), "id", /9007199254740991/);
    await expectViolation(collection.releaseClaim({ claimId: "" }), "claim_id", /at least 1 characters/);
    // The one check left to the handler: a record twice in one commit.
    const twice = await failure(collection.commitBatch({ ...commit, signatures: { recordIds: [1n, 1n], signatures: new Uint8Array(128) } }));
    expect(twice.code).toBe(Code.InvalidArgument);
    expect(twice.rawMessage).toBe("record 1 appears twice in the commit");
  });

  it("keys: counts, TTLs, key ids and fences", async () => {
    await expectViolation(keys.createKeyringKeys({ count: 0 }), "count", /greater than or equal to 1/);
    await expectViolation(keys.acquireKeyLease({ holder: "t", ttlMs: 10 }), "ttl_ms", /1000/);
    await expectViolation(keys.acquireKeyLease({ holder: "", ttlMs: 5000 }), "holder", /at least 1 characters/);
    await expectViolation(keys.getKeyringKey({ keyId: "not a key id!" }), "key_id", /does not match regex pattern/);
    await expectViolation(keys.renewKeyLease({ keyId: "k-1", leaseId: "l", fence: -3n, ttlMs: 5000 }), "fence", /greater than 0/);
    await expectViolation(keys.getWrappedSigningKey({ keyId: "k-1", fence: 1n, leaseId: "" }), "lease_id", /at least 1 characters/);
    // Fences are int64 end to end: the largest one passes the rules and is simply not a lease.
    expect((await failure(keys.getWrappedSigningKey({ keyId: "k-1", fence: 2n ** 63n - 1n, leaseId: "l" }))).code).not.toBe(Code.Internal);
  });

  it("signing: batch sizes, payload sizes, fences, key ids and signature lengths", async () => {
    const batch = { batchId: "b", keyId: "k-1", fence: 1n, leaseId: "l", leaseToken: "t", records: { ids: [1n], payloadLengths: [8], payloads: new Uint8Array(8) } };
    await expectViolation(signing.signBatch({ ...batch, records: undefined }), "records", /required/);
    await expectViolation(signing.signBatch({ ...batch, records: { ids: [1n], payloadLengths: [], payloads: new Uint8Array(8) } }), "records", /one entry per id/);
    const large = await failure(signing.signBatch({ ...batch, records: { ids: [1n], payloadLengths: [1025], payloads: new Uint8Array(1025) } }));
    expect([large.code, large.rawMessage]).toEqual([Code.InvalidArgument, "records.payload_lengths[0]: 1025 bytes is more than the 1024 a payload may have"]);
    await expectViolation(signing.signBatch({ ...batch, keyId: "" }), "key_id", /does not match regex pattern/);
    await expectViolation(signing.signBatch({ ...batch, leaseToken: "" }), "lease_token", /at least 1 characters/);
    // The largest int64 fence is no lease: Aborted, never Internal.
    expect((await failure(signing.signBatch({ ...batch, fence: 2n ** 63n - 1n }))).code).toBe(Code.Aborted);
    await expectViolation(signing.verify({ payload: new Uint8Array(1), signature: new Uint8Array(64) }), "key", /exactly one field is required/);
    await expectViolation(signing.verify({ key: { case: "publicKey", value: new Uint8Array(31) }, payload: new Uint8Array(1), signature: new Uint8Array(64) }), "public_key", /must be 32 bytes/);
    await expectViolation(signing.verify({ key: { case: "publicKey", value: new Uint8Array(32) }, payload: new Uint8Array(1), signature: new Uint8Array(63) }), "signature", /must be 64 bytes/);
    await expectViolation(signing.verifyBatch({ items: [] }), "items", /at least 1 item/);
  });

  it("executor: batch size, concurrency, lease TTL and job ids", async () => {
    const run = (spec: object, jobId = "") => drain(executor.runJob({ jobId, spec }));
    // Batch size is required only to start a job: a message-level rule, reported without a field.
    const missing = await failure(run({ batchSize: 0 }));
    expect(missing.code).toBe(Code.InvalidArgument);
    expect(missing.rawMessage).toMatch(/^spec\.batch_size must be 1-10000 to start a job/);
    await expectViolation(run({ batchSize: 1_000_000 }), "spec.batch_size", /less than or equal to 10000/);
    await expectViolation(run({ batchSize: 10, concurrency: 257 }), "spec.concurrency", /less than or equal to 256/);
    await expectViolation(run({ batchSize: 10, leaseTtlMs: 999 }), "spec.lease_ttl_ms", /1000/);
    await expectViolation(executor.getJob({ jobId: "" }), "job_id", /at least 1 characters/);
    await expectViolation(drain(executor.watchJob({ jobId: "j".repeat(65) })), "job_id", /at most 64 characters/);
    // Joining needs no batch size: the job's own is used (and this one does not exist).
    expect((await failure(run({}, "job-missing"))).code).toBe(Code.NotFound);
  });

  it("vault: a value over 64 KiB is refused before the handler", async () => {
    const vault = createClient(VaultService, transports[name]!());
    await expectViolation(vault.createSecret({ value: new Uint8Array(65_537) }), "value", /at most 65536 bytes/);
  });

  it("every service is built: the rules of users' key pairs and of AuthService apply", async () => {
    const transport = transports[name]!();
    const auth = createClient(AuthService, transport);
    await expectViolation(keys.createKeyPair({}), "purpose", /required/);
    await expectViolation(auth.register({ username: "A", password: "short-password" }), "username", /does not match regex pattern/);
  });
});

describe("signing stream (bidirectional: gRPC over HTTP/2 only)", () => {
  it("answers a bad batch with its own error and signs the next one on the same stream", async () => {
    const transport = createGrpcTransport({ baseUrl: server.url, interceptors: [hostCredentials(server)] });
    const keys = createClient(KeyManagementService, transport);
    const signing = createClient(SigningService, transport);
    await keys.createKeyringKeys({ count: 1 });
    const lease = (await keys.acquireKeyLease({ holder: "validation-test", ttlMs: 10_000, jobId: "validation" })).lease!;
    try {
      async function* requests() {
        const creds = { keyId: lease.keyId, fence: lease.fence, leaseId: lease.leaseId, leaseToken: lease.leaseToken };
        yield { batch: { batchId: "bad", ...creds, records: { ids: [1n], payloadLengths: [], payloads: new Uint8Array(8) } } };
        yield { batch: { batchId: "good", ...creds, records: { ids: [1n], payloadLengths: [8], payloads: new Uint8Array(8) } } };
      }
      const replies = new Map<string, unknown>();
      for await (const reply of signing.signStream(requests())) replies.set(reply.batchId, reply.result);
      expect(replies.get("bad")).toEqual({ case: "error", value: expect.objectContaining({ code: "invalid_argument", message: expect.stringMatching(/^records: payload_lengths must have one entry per id/) }) });
      expect(replies.get("good")).toMatchObject({ case: "signed", value: { signatures: { recordIds: [1n] } } });
    } finally {
      await keys.releaseKeyLease({ keyId: lease.keyId, leaseId: lease.leaseId, fence: lease.fence, used: false });
    }
  });

  it("ends the stream with InvalidArgument for a stream message that breaks its own rules", async () => {
    const signing = createClient(SigningService, createGrpcTransport({ baseUrl: server.url, interceptors: [hostCredentials(server)] }));
    async function* requests() {
      yield { traceparent: "x".repeat(257), batch: { batchId: "b", keyId: "k-1", fence: 1n, records: { ids: [1n], payloadLengths: [1], payloads: new Uint8Array(1) } } };
    }
    const err = await failure(drain(signing.signStream(requests())));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toMatch(/^traceparent: must be at most 256 characters/);
  });
});

describe("the rules themselves", () => {
  const validator = createValidator(VALIDATOR_OPTIONS);
  const services: DescService[] = Object.values(SERVICES).map((s) => s.desc);

  /** Every `string.pattern` rule of every message the services take or give, nested ones included. */
  function protoPatterns(): Set<string> {
    const found = new Set<string>();
    const seen = new Set<string>();
    const pending: DescMessage[] = services.flatMap((s) => s.methods.flatMap((m) => [m.input, m.output]));
    for (let schema = pending.pop(); schema; schema = pending.pop()) {
      if (seen.has(schema.typeName)) continue;
      seen.add(schema.typeName);
      for (const f of schema.fields) {
        const rules = getOption(f, fieldRules);
        if (rules.type.case === "string" && rules.type.value.pattern !== undefined) found.add(rules.type.value.pattern);
        if (f.message) pending.push(f.message);
      }
    }
    return found;
  }

  it("match every pattern of the protos as RE2 does, whatever the input", () => {
    const patterns = protoPatterns();
    expect(patterns.size).toBeGreaterThanOrEqual(4);
    const printable = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i));
    const probes = [
      "", "a", "key-1", "alice", "a.b/c_d-e", "0123", "12345678901234567890",
      ...printable, ...printable.map((c) => `abc${c}def`),
      "k".repeat(63), "k".repeat(64), "k".repeat(65), "k".repeat(255), "k".repeat(256), "9".repeat(18), "9".repeat(19),
      "key\n", "\nkey", "ke\ny", "kéy", "ｋey", "key\u0000", "key😀", "😀", "key ",
    ];
    for (const pattern of patterns) {
      const re2 = RE2JS.compile(pattern);
      for (const probe of probes) expect([pattern, probe, matchPattern(pattern, probe)]).toEqual([pattern, probe, re2.test(probe)]);
    }
  });

  it("leave any other pattern to RE2, with its syntax", () => {
    // RegExp knows neither (?i) nor \Q…\E: these answer only because RE2 matched them.
    expect(matchPattern("(?i)^abc$", "ABC")).toBe(true);
    expect(matchPattern("^\\Qa.b\\E$", "a.b")).toBe(true);
    expect(matchPattern("^\\Qa.b\\E$", "axb")).toBe(false);
    // A class with an escape is not the plain shape either: RE2's \pL is a letter in any script.
    expect(matchPattern("^[\\pL]{1,3}$", "éé")).toBe(true);
  });

  it("compile for every request message of every service, built or not", () => {
    for (const service of services) {
      for (const method of service.methods) {
        const result = validator.validate(method.input, create(method.input));
        expect(result.kind === "error" ? `${method.input.typeName}: ${result.error.message}` : "ok").toBe("ok");
      }
    }
  });

  it("hold the contracts of auth and of the unbuilt services, vault and messages", async () => {
    const { RegisterRequestSchema } = await import("../gen/keymesh/auth/v1/auth_service_pb.js");
    const { CreateSecretRequestSchema, GetSecretRequestSchema } = await import("../gen/keymesh/vault/v1/vault_service_pb.js");
    const { SendMessageRequestSchema } = await import("../gen/keymesh/messages/v1/messages_service_pb.js");
    const fields = <T extends DescMessage>(schema: T, init: MessageInitShape<T>) => {
      const result = validator.validate(schema, create(schema, init));
      return result.kind === "valid" ? [] : (result.violations ?? []).map(String);
    };
    expect(fields(RegisterRequestSchema, { username: "alice", password: "correct horse battery" })).toEqual([]);
    expect(fields(RegisterRequestSchema, { username: "Al", password: "short" })).toEqual([
      expect.stringMatching(/^username: does not match regex pattern/),
      "password: must be at least 12 bytes [string.min_bytes]",
    ]);
    expect(fields(CreateSecretRequestSchema, { value: new Uint8Array(1) })).toEqual([]);
    expect(fields(CreateSecretRequestSchema, { name: "bad name", value: new Uint8Array(65_537), labels: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"])) })).toEqual([
      expect.stringMatching(/^name: does not match regex pattern/),
      expect.stringMatching(/^value: must be at most 65536 bytes/),
      expect.stringMatching(/^labels: map must be at most 64 entries/),
    ]);
    expect(fields(GetSecretRequestSchema, {})).toEqual([expect.stringMatching(/^selector: exactly one field is required/)]);
    expect(fields(SendMessageRequestSchema, { recipient: "bob", body: new Uint8Array(65_537) })).toEqual([expect.stringMatching(/^body: must be at most 65536 bytes/)]);
  });
});

describe("buf curl", () => {
  const BUF = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));
  const run = promisify(execFile);

  it("shows the field and the rule a request breaks", async () => {
    const res = await run(BUF, ["curl", "--http2-prior-knowledge", "-H", `authorization: Bearer ${server.token}`, "-d", '{"count":0}', `${server.url}/keymesh.collection.v1.CollectionService/SeedRecords`], { timeout: 30_000 }).then(
      () => ({ code: 0, stderr: "" }),
      (err: { code?: number; stderr?: string }) => ({ code: err.code ?? -1, stderr: err.stderr ?? "" }),
    );
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain("invalid_argument");
    expect(res.stderr).toContain("count: must be greater than or equal to 1 and less than or equal to 10000000");
  });
});
