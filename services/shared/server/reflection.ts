import { create, fromBinary, toBinary, type DescFile, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import {
  FileDescriptorProtoSchema,
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
} from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import {
  ServerReflection as ServerReflectionV1,
  ServerReflectionRequestSchema as RequestV1Schema,
  ServerReflectionResponseSchema as ResponseV1Schema,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from "../../../gen/grpc/reflection/v1/reflection_pb.js";
import {
  ServerReflection as ServerReflectionV1alpha,
  ServerReflectionRequestSchema as RequestV1alphaSchema,
  ServerReflectionResponseSchema as ResponseV1alphaSchema,
  type ServerReflectionRequest as RequestV1alpha,
  type ServerReflectionResponse as ResponseV1alpha,
} from "../../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/**
 * gRPC server reflection (`grpc.reflection.v1` and `v1alpha`), served from the descriptors
 * protobuf-es generated: every `DescFile` keeps its original `FileDescriptorProto` (`file.proto`),
 * which is what reflection clients (grpcurl, buf curl, Postman) expect, together with its
 * transitive dependencies. Symbols resolve to their file at any depth: services, methods,
 * messages (nested too), fields, oneofs, enums, enum values and extensions.
 */

/** The reflection services themselves, which a server always lists. */
export const REFLECTION_SERVICES: readonly DescService[] = [ServerReflectionV1, ServerReflectionV1alpha];

/** A reflection index over a set of services. */
export interface Reflection {
  /** Full names of the listed services, sorted. */
  readonly serviceNames: readonly string[];
  /** Answers one request (used by both protocol versions; exposed for tests). */
  answer(req: ServerReflectionRequest): ServerReflectionResponse;
  /** Registers `grpc.reflection.v1.ServerReflection` and its v1alpha twin on a router. */
  register(router: ConnectRouter): void;
}

interface Index {
  readonly files: Map<string, DescFile>;
  readonly symbols: Map<string, DescFile>;
  /** extendee type name → field number → file declaring the extension */
  readonly extensions: Map<string, Map<number, DescFile>>;
  /** Full names of every message type. */
  readonly messages: Set<string>;
}

const join = (scope: string, name: string) => (scope === "" ? name : `${scope}.${name}`);
const stripDot = (name: string) => name.replace(/^\./, "");

/**
 * Indexes the symbols of a file from its FileDescriptorProto, which also holds what
 * protobuf-es does not surface as descriptors (e.g. synthesized map entry messages).
 */
function addEnum(index: Index, file: DescFile, scope: string, e: EnumDescriptorProto): void {
  index.symbols.set(join(scope, e.name), file);
  // Enum values are scoped like siblings of their enum (C++ scoping rules).
  for (const v of e.value) index.symbols.set(join(scope, v.name), file);
}

function addExtension(index: Index, file: DescFile, scope: string, ext: FieldDescriptorProto): void {
  index.symbols.set(join(scope, ext.name), file);
  const extendee = stripDot(ext.extendee);
  let byNumber = index.extensions.get(extendee);
  if (byNumber === undefined) index.extensions.set(extendee, (byNumber = new Map()));
  byNumber.set(ext.number, file);
}

function addMessage(index: Index, file: DescFile, scope: string, m: DescriptorProto): void {
  const name = join(scope, m.name);
  index.symbols.set(name, file);
  index.messages.add(name);
  for (const f of m.field) index.symbols.set(join(name, f.name), file);
  for (const o of m.oneofDecl) index.symbols.set(join(name, o.name), file);
  for (const nested of m.nestedType) addMessage(index, file, name, nested);
  for (const nested of m.enumType) addEnum(index, file, name, nested);
  for (const ext of m.extension) addExtension(index, file, name, ext);
}

function addFile(index: Index, file: DescFile): void {
  const proto = file.proto;
  if (index.files.has(proto.name)) return;
  index.files.set(proto.name, file);
  for (const dep of file.dependencies) addFile(index, dep);
  const pkg = proto.package;
  for (const m of proto.messageType) addMessage(index, file, pkg, m);
  for (const e of proto.enumType) addEnum(index, file, pkg, e);
  for (const ext of proto.extension) addExtension(index, file, pkg, ext);
  for (const s of proto.service) {
    const name = join(pkg, s.name);
    index.symbols.set(name, file);
    for (const method of s.method) index.symbols.set(join(name, method.name), file);
  }
}

/**
 * Builds reflection for `services` (the running ones plus health); the reflection services
 * are added automatically.
 */
export function createReflection(services: readonly DescService[]): Reflection {
  const listed = [...new Map([...services, ...REFLECTION_SERVICES].map((s) => [s.typeName, s])).values()];
  const index: Index = { files: new Map(), symbols: new Map(), extensions: new Map(), messages: new Set() };
  for (const s of listed) addFile(index, s.file);
  const serviceNames = listed.map((s) => s.typeName).sort();
  const encoded = new Map<string, Uint8Array>();
  const bytesOf = (file: DescFile) => {
    let bytes = encoded.get(file.proto.name);
    if (bytes === undefined) encoded.set(file.proto.name, (bytes = toBinary(FileDescriptorProtoSchema, file.proto)));
    return bytes;
  };

  /** The file first, then every transitive dependency once. */
  const withDependencies = (file: DescFile): Uint8Array[] => {
    const seen = new Set<string>();
    const out: Uint8Array[] = [];
    const visit = (f: DescFile) => {
      if (seen.has(f.proto.name)) return;
      seen.add(f.proto.name);
      out.push(bytesOf(f));
      for (const dep of f.dependencies) visit(dep);
    };
    visit(file);
    return out;
  };

  const respond = (req: ServerReflectionRequest, messageResponse: MessageInitShape<typeof ResponseV1Schema>["messageResponse"]) =>
    create(ResponseV1Schema, { validHost: req.host, originalRequest: req, messageResponse });
  const notFound = (req: ServerReflectionRequest, what: string) =>
    respond(req, { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: `${what} not found` } });
  const files = (req: ServerReflectionRequest, file: DescFile | undefined, what: string) =>
    file === undefined
      ? notFound(req, what)
      : respond(req, { case: "fileDescriptorResponse", value: { fileDescriptorProto: withDependencies(file) } });

  const answer = (req: ServerReflectionRequest): ServerReflectionResponse => {
    const r = req.messageRequest;
    switch (r.case) {
      case "listServices":
        return respond(req, { case: "listServicesResponse", value: { service: serviceNames.map((name) => ({ name })) } });
      case "fileByFilename":
        return files(req, index.files.get(r.value), `file "${r.value}"`);
      case "fileContainingSymbol": {
        const symbol = stripDot(r.value);
        return files(req, index.symbols.get(symbol), `symbol "${symbol}"`);
      }
      case "fileContainingExtension": {
        const type = stripDot(r.value.containingType);
        const file = index.extensions.get(type)?.get(r.value.extensionNumber);
        return files(req, file, `extension ${r.value.extensionNumber} of "${type}"`);
      }
      case "allExtensionNumbersOfType": {
        const type = stripDot(r.value);
        if (!index.messages.has(type)) return notFound(req, `message type "${type}"`);
        const numbers = [...(index.extensions.get(type)?.keys() ?? [])].sort((a, b) => a - b);
        return respond(req, { case: "allExtensionNumbersResponse", value: { baseTypeName: type, extensionNumber: numbers } });
      }
      default:
        return respond(req, {
          case: "errorResponse",
          value: { errorCode: Code.InvalidArgument, errorMessage: "the request names no known reflection query" },
        });
    }
  };

  return {
    serviceNames,
    answer,
    register(router) {
      router.service(ServerReflectionV1, {
        async *serverReflectionInfo(requests) {
          for await (const req of requests) yield answer(req);
        },
      });
      // v1alpha is wire-identical to v1: translate through the binary encoding.
      router.service(ServerReflectionV1alpha, {
        async *serverReflectionInfo(requests) {
          for await (const req of requests) yield toV1alpha(answer(toV1(req)));
        },
      });
    },
  };
}

function toV1(req: RequestV1alpha): ServerReflectionRequest {
  return fromBinary(RequestV1Schema, toBinary(RequestV1alphaSchema, req));
}

function toV1alpha(res: ServerReflectionResponse): ResponseV1alpha {
  return fromBinary(ResponseV1alphaSchema, toBinary(ResponseV1Schema, res));
}
