import { SERVICE_NAMES, type ServiceName } from "./shared/config.js";
import type { ServiceModule } from "./shared/server/service-module.js";

/**
 * The services a keymesh process can run, by short name. Modules are loaded on demand so a
 * process running one service never loads the code of the others.
 */
export const SERVICE_MODULES: Readonly<Record<ServiceName, () => Promise<ServiceModule>>> = {
  auth: async () => (await import("./auth/module.js")).authModule,
  keys: async () => (await import("./keys/module.js")).keysModule,
  signing: async () => (await import("./signing/module.js")).signingModule,
  collection: async () => (await import("./collection/module.js")).collectionModule,
  executor: async () => (await import("./executor/module.js")).executorModule,
  messages: async () => (await import("./messages/module.js")).messagesModule,
  vault: async () => (await import("./vault/module.js")).vaultModule,
};

/** A service name that is not one of the seven. */
export class UnknownServiceError extends Error {
  override readonly name = "UnknownServiceError";
  constructor(readonly service: string) {
    super(`unknown service "${service}" (expected one of: ${SERVICE_NAMES.join(", ")})`);
  }
}

/** True when `name` is one of the seven services. */
export function isServiceName(name: string): name is ServiceName {
  return (SERVICE_NAMES as readonly string[]).includes(name);
}

/**
 * Loads the modules for the given names, in the canonical order, without duplicates;
 * no names means all seven. Throws `UnknownServiceError` for a name that is not a service.
 */
export async function loadServiceModules(names: readonly string[] = []): Promise<ServiceModule[]> {
  for (const name of names) if (!isServiceName(name)) throw new UnknownServiceError(name);
  const wanted = names.length === 0 ? SERVICE_NAMES : SERVICE_NAMES.filter((n) => names.includes(n));
  return Promise.all(wanted.map((name) => SERVICE_MODULES[name]()));
}
