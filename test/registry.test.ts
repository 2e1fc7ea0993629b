import { describe, expect, it } from "vitest";
import { loadServiceModules, SERVICE_NAMES, SERVICES, UnknownServiceError } from "../services/registry.js";
import { createPeerClients } from "../services/shared/clients.js";
import { KNOWN_VARIABLES, loadConfig } from "../services/shared/config.js";

describe("service registry", () => {
  it("loads all seven modules in order, each with its public service name", async () => {
    const modules = await loadServiceModules();
    expect(modules.map((m) => m.name)).toEqual([...SERVICE_NAMES]);
    for (const m of modules) expect(m.desc).toBe(SERVICES[m.name as keyof typeof SERVICES].desc);
  });

  it("loads a subset in canonical order without duplicates", async () => {
    const modules = await loadServiceModules(["vault", "auth", "vault"]);
    expect(modules.map((m) => m.name)).toEqual(["auth", "vault"]);
  });

  it("rejects unknown names", async () => {
    await expect(loadServiceModules(["vault", "nope"])).rejects.toBeInstanceOf(UnknownServiceError);
  });

  it("declares the resources each service needs", async () => {
    const needs = Object.fromEntries((await loadServiceModules()).map((m) => [m.name, m.needs]));
    for (const name of ["auth", "keys", "collection", "executor", "messages", "vault"]) expect(needs[name]?.database, name).toBe(true);
    expect(needs.keys?.coordinator).toBe(true);
  });

  it("is the one list config keys and peer clients derive from", () => {
    const config = loadConfig(Object.fromEntries(SERVICE_NAMES.map((n) => [`KEYMESH_${n.toUpperCase()}_URL`, `http://${n}:9000`])));
    const clients = createPeerClients(config);
    try {
      for (const name of SERVICE_NAMES) {
        expect(KNOWN_VARIABLES).toContain(`KEYMESH_${name.toUpperCase()}_URL`);
        expect(config.serviceUrls[name]).toBe(`http://${name}:9000`);
        expect(clients.urlOf(name)).toBe(`http://${name}:9000`);
        expect(typeof clients[name]).toBe("object");
      }
    } finally {
      clients.close();
    }
  });
});
