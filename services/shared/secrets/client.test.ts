import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Clock } from "./clock.js";
import { createSecretsClient, SecretNotFoundError } from "./client.js";
import { createEnvProvider, createProviderChain, type SecretProvider } from "./providers.js";

/** A clock that only moves when told, running due timers in order. */
function fakeClock() {
  let t = 0;
  const timers: { at: number; fn: () => void; cancelled: boolean }[] = [];
  const settle = () => new Promise<void>((resolve) => setImmediate(resolve));
  const clock: Clock & { advance(ms: number): Promise<void> } = {
    now: () => t,
    setTimeout(fn, ms) {
      const timer = { at: t + ms, fn, cancelled: false };
      timers.push(timer);
      return () => {
        timer.cancelled = true;
      };
    },
    async advance(ms) {
      const end = t + ms;
      for (;;) {
        const due = timers.filter((x) => !x.cancelled && x.at <= end).sort((a, b) => a.at - b.at)[0];
        if (due === undefined) break;
        timers.splice(timers.indexOf(due), 1);
        t = due.at;
        due.fn();
        await settle();
      }
      t = end;
      await settle();
    },
  };
  return clock;
}

/** A secret store that can go down, logging every successful answer with its time. */
function fakeBackend(clock: Clock) {
  const versions = new Map<string, number>([
    ["a", 1],
    ["b", 1],
  ]);
  const state = { down: false, calls: 0 };
  const served: { time: number; name: string; version: number }[] = [];
  const provider: SecretProvider = {
    name: "fake",
    async get(name) {
      state.calls++;
      await Promise.resolve();
      if (state.down) throw new Error("connect ECONNREFUSED");
      const v = versions.get(name);
      if (v === undefined) return undefined;
      served.push({ time: clock.now(), name, version: v });
      return new TextEncoder().encode(`${name}:${v}`);
    },
  };
  return { provider, versions, state, served };
}

const TTL = 1000;
const REFRESH = 200;
const MAX_STALE = 1500;

type Cmd =
  | { op: "advance"; ms: number }
  | { op: "get"; name: "a" | "b" | "missing" }
  | { op: "set"; name: "a" | "b" }
  | { op: "down"; down: boolean }
  | { op: "invalidate"; name: "a" | "b" | undefined };

const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 2 * TTL }) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant("get" as const), name: fc.constantFrom("a" as const, "b" as const, "missing" as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("set" as const), name: fc.constantFrom("a" as const, "b" as const) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("down" as const), down: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("invalidate" as const), name: fc.constantFrom("a" as const, "b" as const, undefined) }) },
);

describe("secrets client cache (property, fake clock)", () => {
  it("serves fresh values within the TTL, refreshes in the background, and serves stale values only while the store is down, up to the bound", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(cmd, { minLength: 1, maxLength: 60 }), async (cmds) => {
        const clock = fakeClock();
        const backend = fakeBackend(clock);
        const warnings: unknown[] = [];
        const client = createSecretsClient({ source: backend.provider, clock, ttl: TTL, refresh: REFRESH, maxStale: MAX_STALE, logger: { warn: (o: unknown) => warnings.push(o) } as never });
        const invalidatedAt = new Map<string, number>();
        for (const c of cmds) {
          if (c.op === "advance") await clock.advance(c.ms);
          else if (c.op === "set") backend.versions.set(c.name, backend.versions.get(c.name)! + 1);
          else if (c.op === "down") backend.state.down = c.down;
          else if (c.op === "invalidate") {
            client.invalidate(c.name);
            for (const n of c.name === undefined ? ["a", "b"] : [c.name]) invalidatedAt.set(n, backend.served.length);
          } else {
            const now = clock.now();
            // What the cache may hold: the latest answer since the last invalidation.
            const latest = backend.served.slice(invalidatedAt.get(c.name) ?? 0).filter((s) => s.name === c.name).at(-1);
            const callsBefore = backend.state.calls;
            let result: string | Error;
            try {
              result = new TextDecoder().decode(await client.get(c.name));
            } catch (err) {
              result = err as Error;
            }
            if (c.name === "missing") {
              expect(result).toBeInstanceOf(backend.state.down ? Error : SecretNotFoundError);
              continue;
            }
            if (latest !== undefined && now < latest.time + TTL) {
              // Fresh: answered from the cache, without asking the store.
              expect(result).toBe(`${c.name}:${latest.version}`);
              expect(backend.state.calls).toBe(callsBefore);
            } else if (!backend.state.down) {
              // Expired or absent, store up: a fresh answer from the store, now.
              expect(result).toBe(`${c.name}:${backend.versions.get(c.name)}`);
            } else if (latest !== undefined && now < latest.time + TTL + MAX_STALE) {
              // Store down, within the bound: the stale value, with a warning.
              expect(result).toBe(`${c.name}:${latest.version}`);
              expect(warnings.length).toBeGreaterThan(0);
            } else {
              expect(result).toBeInstanceOf(Error);
            }
          }
        }
        client.close();
      }),
      {
        numRuns: 300,
        // The store going down for longer than the bound, spelled out so every run checks it.
        examples: [[[{ op: "get", name: "a" }, { op: "down", down: true }, { op: "advance", ms: 2000 }, { op: "advance", ms: 2000 }, { op: "get", name: "a" }]]],
      },
    );
  });

  it("refreshes a value in use shortly before it expires, so readers never wait for the store", async () => {
    const clock = fakeClock();
    const backend = fakeBackend(clock);
    const client = createSecretsClient({ source: backend.provider, clock, ttl: TTL, refresh: REFRESH });
    expect(new TextDecoder().decode(await client.get("a"))).toBe("a:1");
    backend.versions.set("a", 2);
    await clock.advance(TTL - REFRESH - 1);
    expect(backend.state.calls).toBe(1);
    await clock.advance(1); // the refresh fires at ttl - refresh
    expect(backend.state.calls).toBe(2);
    await clock.advance(REFRESH + 10); // past the first fetch's expiry: still served from cache
    expect(new TextDecoder().decode(await client.get("a"))).toBe("a:2");
    expect(backend.state.calls).toBe(2);
    // A value nobody reads is not refreshed forever.
    await clock.advance(10 * TTL);
    expect(backend.state.calls).toBe(3);
    client.close();
  });

  it("reads KEYMESH_SECRET_<NAME> with the env provider, first in the chain", async () => {
    const env = { KEYMESH_SECRET_DATABASE_URL: "mysql://u:p@db/app" };
    const fallback: SecretProvider = { name: "other", get: async (n) => (n === "api-key" ? new TextEncoder().encode("from-vault") : undefined) };
    const client = createSecretsClient({ source: createProviderChain([createEnvProvider(env), fallback]) });
    expect(await client.getString("database-url")).toBe("mysql://u:p@db/app");
    expect(await client.getAs("api-key", (b) => new TextDecoder().decode(b).length)).toBe(10);
    await expect(client.get("nope")).rejects.toBeInstanceOf(SecretNotFoundError);
    const envOnly = createSecretsClient({ provider: "env", env });
    expect(await envOnly.getString("database-url")).toBe("mysql://u:p@db/app");
    expect(() => createSecretsClient({ provider: "vault", env })).toThrow(/KEYMESH_SECRETS_URL/);
  });
});
