import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { bidiAll, grpcClient, grpc } from "./support/grpc.js";
import { startTestHost, type TestHost } from "./support/host.js";

const ALL_SERVICES = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
  "keymesh.auth.v1.AuthService",
  "keymesh.collection.v1.CollectionService",
  "keymesh.executor.v1.ExecutorService",
  "keymesh.keys.v1.KeyManagementService",
  "keymesh.messages.v1.MessagesService",
  "keymesh.signing.v1.SigningService",
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

const V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

function reflect(requests: MessageInitShape<typeof v1.ServerReflectionRequestSchema>[]) {
  return bidiAll(client, V1, v1.ServerReflectionRequestSchema, v1.ServerReflectionResponseSchema, requests);
}

/** Decodes a file_descriptor_response into a registry, proving the set is complete. */
function registryOf(res: v1.ServerReflectionResponse) {
  expect(res.messageResponse.case).toBe("fileDescriptorResponse");
  const files = (res.messageResponse.value as v1.FileDescriptorResponse).fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
  const byName = new Map(files.map((f) => [f.name, f]));
  // The requested file comes first; every import must be among the rest.
  return { names: files.map((f) => f.name), registry: createFileRegistry(files[0]!, (name) => byName.get(name)) };
}

describe("server reflection", () => {
  it("lists the seven services, health and reflection on v1", async () => {
    const [res] = await reflect([{ messageRequest: { case: "listServices", value: "" } }]);
    expect(res?.messageResponse.case).toBe("listServicesResponse");
    const names = (res?.messageResponse.value as v1.ListServiceResponse).service.map((s) => s.name);
    expect(names.sort()).toEqual(ALL_SERVICES);
  });

  it("lists the same on v1alpha", async () => {
    const [res] = await bidiAll(client, V1ALPHA, v1alpha.ServerReflectionRequestSchema, v1alpha.ServerReflectionResponseSchema, [
      { host: "example", messageRequest: { case: "listServices", value: "" } },
    ]);
    expect(res?.validHost).toBe("example");
    expect(res?.originalRequest?.messageRequest.case).toBe("listServices");
    const names = (res?.messageResponse.value as v1alpha.ListServiceResponse).service.map((s) => s.name);
    expect(names.sort()).toEqual(ALL_SERVICES);
  });

  it("answers file_containing_symbol for a service with its file and dependencies", async () => {
    const [res] = await reflect([{ messageRequest: { case: "fileContainingSymbol", value: "keymesh.vault.v1.VaultService" } }]);
    const { names, registry } = registryOf(res!);
    expect(names[0]).toBe("keymesh/vault/v1/vault_service.proto");
    expect(names).toContain("keymesh/vault/v1/vault.proto");
    const service = registry.getService("keymesh.vault.v1.VaultService");
    expect(service?.methods.map((m) => m.name)).toContain("CreateSecret");
  });

  it("resolves nested messages, enums, methods and fields", async () => {
    const responses = await reflect([
      { messageRequest: { case: "fileContainingSymbol", value: "grpc.health.v1.HealthListResponse.StatusesEntry" } },
      { messageRequest: { case: "fileContainingSymbol", value: "grpc.health.v1.HealthCheckResponse.ServingStatus" } },
      { messageRequest: { case: "fileContainingSymbol", value: "grpc.health.v1.Health.Watch" } },
      { messageRequest: { case: "fileContainingSymbol", value: ".grpc.health.v1.HealthCheckRequest.service" } },
    ]);
    expect(responses).toHaveLength(4);
    for (const res of responses) expect(registryOf(res).names).toEqual(["grpc/health/v1/health.proto"]);
    // A map entry is a synthesized nested message: it is in the descriptor, not a DescMessage.
    const health = registryOf(responses[0]!).registry.getFile("grpc/health/v1/health.proto")?.proto;
    const list = health?.messageType.find((m) => m.name === "HealthListResponse");
    expect(list?.nestedType.map((m) => [m.name, m.field.map((f) => f.name)])).toEqual([["StatusesEntry", ["key", "value"]]]);
  });

  it("answers file_by_filename", async () => {
    const [res] = await reflect([{ messageRequest: { case: "fileByFilename", value: "keymesh/keys/v1/key_management_service.proto" } }]);
    const { names, registry } = registryOf(res!);
    // The file, then its imports: the validation rules (with their well-known types), the
    // access option's definition and keys.proto.
    expect(names).toEqual([
      "keymesh/keys/v1/key_management_service.proto",
      "buf/validate/validate.proto",
      "google/protobuf/descriptor.proto",
      "google/protobuf/duration.proto",
      "google/protobuf/field_mask.proto",
      "google/protobuf/timestamp.proto",
      "keymesh/auth/v1/access.proto",
      "keymesh/keys/v1/keys.proto",
    ]);
    expect(registry.getService("keymesh.keys.v1.KeyManagementService")).toBeDefined();
  });

  it("reports unknown symbols, files and extensions as NOT_FOUND and keeps the stream open", async () => {
    const responses = await reflect([
      { messageRequest: { case: "fileContainingSymbol", value: "keymesh.nope.v1.Nothing" } },
      { messageRequest: { case: "fileByFilename", value: "nope.proto" } },
      { messageRequest: { case: "fileContainingExtension", value: { containingType: "grpc.health.v1.HealthCheckRequest", extensionNumber: 100 } } },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "keymesh.nope.v1.Nothing" } },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "grpc.health.v1.HealthCheckRequest" } },
    ]);
    for (const res of responses.slice(0, 4)) {
      expect(res.messageResponse.case).toBe("errorResponse");
      expect((res.messageResponse.value as v1.ErrorResponse).errorCode).toBe(grpc.status.NOT_FOUND);
    }
    expect(responses[4]?.messageResponse).toMatchObject({
      case: "allExtensionNumbersResponse",
      value: { baseTypeName: "grpc.health.v1.HealthCheckRequest", extensionNumber: [] },
    });
  });
});
