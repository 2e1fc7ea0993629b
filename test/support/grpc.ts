import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";

/** A raw grpc-js client (no generated stubs: protobuf-es does the encoding). */
export function grpcClient(address: string, credentials = grpc.credentials.createInsecure(), options: grpc.ClientOptions = {}): grpc.Client {
  return new grpc.Client(address, credentials, options);
}

function serializer<D extends DescMessage>(schema: D) {
  return (m: MessageShape<D>) => Buffer.from(toBinary(schema, m));
}

function deserializer<D extends DescMessage>(schema: D) {
  return (b: Buffer) => fromBinary(schema, b);
}

/** A unary call; rejects with the grpc-js ServiceError. */
export function unary<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  path: string,
  input: I,
  output: O,
  message: MessageInitShape<I>,
  options: grpc.CallOptions = {},
  metadata = new grpc.Metadata(),
): Promise<MessageShape<O>> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(path, serializer(input), deserializer(output), create(input, message), metadata, options, (err, res) => {
      if (err) reject(err);
      else resolve(res as MessageShape<O>);
    });
  });
}

/** A unary call sending raw bytes as the request message. */
export function unaryRaw(client: grpc.Client, path: string, body: Buffer, options: grpc.CallOptions = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
      new grpc.Metadata(),
      options,
      (err, res) => {
        if (err) reject(err);
        else resolve(res as Buffer);
      },
    );
  });
}

/** Sends every request on one bidi stream, half-closes, and collects the responses. */
export function bidiAll<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  path: string,
  input: I,
  output: O,
  requests: MessageInitShape<I>[],
): Promise<MessageShape<O>[]> {
  return new Promise((resolve, reject) => {
    const call = client.makeBidiStreamRequest(path, serializer(input), deserializer(output));
    const responses: MessageShape<O>[] = [];
    call.on("data", (m: MessageShape<O>) => responses.push(m));
    call.on("error", reject);
    call.on("end", () => resolve(responses));
    for (const r of requests) call.write(create(input, r));
    call.end();
  });
}

/** Opens a server stream; the caller listens for events. */
export function serverStream<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  path: string,
  input: I,
  output: O,
  message: MessageInitShape<I>,
  options: grpc.CallOptions = {},
): grpc.ClientReadableStream<MessageShape<O>> {
  return client.makeServerStreamRequest(path, serializer(input), deserializer(output), create(input, message), new grpc.Metadata(), options);
}

/** grpc-js client options sending `authorization: Bearer <token>` on every call. */
export function withToken(token: string): grpc.ClientOptions {
  const interceptor: grpc.Interceptor = (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${token}`);
        next(metadata, listener);
      },
    });
  return { interceptors: [interceptor] };
}

export { grpc };
