import { SERVICE_NAMES, SERVICES, type ServiceName } from "../../services/registry.js";
import type { ServiceModule } from "../../services/shared/server/service-module.js";

/**
 * Modules that register each service with no handlers (every RPC answers Unimplemented) and
 * need no resources: host-level tests stay independent of how far each service has come.
 */
export function placeholderModules(names: readonly ServiceName[] = SERVICE_NAMES): ServiceModule[] {
  return names.map((name) => ({
    name,
    desc: SERVICES[name].desc,
    needs: {},
    async register(router) {
      router.service(SERVICES[name].desc, {});
    },
  }));
}
