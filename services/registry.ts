import type { DescService } from "@bufbuild/protobuf";
import { AuthService } from "../gen/keymesh/auth/v1/auth_service_pb.js";
import { CollectionService } from "../gen/keymesh/collection/v1/collection_service_pb.js";
import { ExecutorService } from "../gen/keymesh/executor/v1/executor_service_pb.js";
import { KeyManagementService } from "../gen/keymesh/keys/v1/key_management_service_pb.js";
import { MessagesService } from "../gen/keymesh/messages/v1/messages_service_pb.js";
import { SigningService } from "../gen/keymesh/signing/v1/signing_service_pb.js";
import { VaultService } from "../gen/keymesh/vault/v1/vault_service_pb.js";
import type { ServiceModule } from "./shared/server/service-module.js";

/**
 * The one list of services. Everything else derives from it: the short names
 * (`keymesh serve vault`), the `KEYMESH_<NAME>_URL` variables (shared/config.ts), the peer
 * clients (shared/clients.ts), the host's modules and the test mesh. Adding a service is one
 * line here plus its folder (services/<name>/module.ts).
 *
 * Each entry carries the generated descriptor, which is all config and clients need, and a
 * loader for the module: a process running one service never loads the code of the others.
 */
export const SERVICES = {
  auth: { desc: AuthService, load: async () => (await import("./auth/module.js")).authModule },
  keys: { desc: KeyManagementService, load: async () => (await import("./keys/module.js")).keysModule },
  signing: { desc: SigningService, load: async () => (await import("./signing/module.js")).signingModule },
  collection: { desc: CollectionService, load: async () => (await import("./collection/module.js")).collectionModule },
  executor: { desc: ExecutorService, load: async () => (await import("./executor/module.js")).executorModule },
  messages: { desc: MessagesService, load: async () => (await import("./messages/module.js")).messagesModule },
  vault: { desc: VaultService, load: async () => (await import("./vault/module.js")).vaultModule },
} as const satisfies Record<string, { readonly desc: DescService; readonly load: () => Promise<ServiceModule> }>;

/** A service's short name, as used on the command line and in variable names. */
export type ServiceName = keyof typeof SERVICES;

/** The services in their canonical order (the order of `SERVICES`). */
export const SERVICE_NAMES = Object.keys(SERVICES) as readonly ServiceName[];

/** The generated descriptor of each service, by short name. */
export type ServiceDescriptors = { readonly [N in ServiceName]: (typeof SERVICES)[N]["desc"] };

/** A service name that is not in the registry. */
export class UnknownServiceError extends Error {
  override readonly name = "UnknownServiceError";
  constructor(readonly service: string) {
    super(`unknown service "${service}" (expected one of: ${SERVICE_NAMES.join(", ")})`);
  }
}

/** True when `name` is a registered service. */
export function isServiceName(name: string): name is ServiceName {
  return Object.hasOwn(SERVICES, name);
}

/** Loads one module and checks that it is the service its registry entry says. */
export async function loadServiceModule(name: ServiceName): Promise<ServiceModule> {
  const entry = SERVICES[name];
  const module = await entry.load();
  if (module.name !== name || module.desc !== entry.desc) {
    throw new Error(`services/${name}/module.ts declares "${module.name}" (${module.desc.typeName}), not ${name} (${entry.desc.typeName})`);
  }
  return module;
}

/**
 * Loads the modules for the given names, in the canonical order, without duplicates;
 * no names means every service. Throws `UnknownServiceError` for a name that is not a service.
 */
export async function loadServiceModules(names: readonly string[] = []): Promise<ServiceModule[]> {
  for (const name of names) if (!isServiceName(name)) throw new UnknownServiceError(name);
  const wanted = names.length === 0 ? SERVICE_NAMES : SERVICE_NAMES.filter((n) => names.includes(n));
  return Promise.all(wanted.map(loadServiceModule));
}
