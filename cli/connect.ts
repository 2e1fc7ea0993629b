import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { createClientTracingInterceptor } from "../services/shared/telemetry/interceptors.js";

/** The mesh address the CLI talks to: --url, then KEYMESH_URL, then the local default. */
export function meshUrl(flag: string | undefined, env: Readonly<Record<string, string | undefined>> = process.env): string {
  return flag ?? env.KEYMESH_URL ?? "http://127.0.0.1:8080";
}

/** Generated clients over gRPC (HTTP/2) to one mesh address, with trace propagation. */
export function connectTo(url: string, token?: string) {
  const interceptors: Interceptor[] = [createClientTracingInterceptor()];
  if (token !== undefined) {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  // Records and signatures are random bytes: asking the server to gzip them only costs CPU.
  const transport = createGrpcTransport({ baseUrl: url, interceptors, acceptCompression: [] });
  return <S extends DescService>(desc: S): Client<S> => createClient(desc, transport);
}
