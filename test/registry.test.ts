import { describe, expect, it } from "vitest";
import { loadServiceModules, UnknownServiceError } from "../services/registry.js";
import { SERVICE_DESCRIPTORS } from "../services/shared/clients.js";
import { SERVICE_NAMES } from "../services/shared/config.js";

describe("service registry", () => {
  it("loads all seven modules in order, each with its public service name", async () => {
    const modules = await loadServiceModules();
    expect(modules.map((m) => m.name)).toEqual([...SERVICE_NAMES]);
    for (const m of modules) expect(m.desc.typeName).toBe(SERVICE_DESCRIPTORS[m.name as keyof typeof SERVICE_DESCRIPTORS].typeName);
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
});
