import type { Command } from "../command.js";

/**
 * Every command, loaded on demand so `keymesh <command>` only imports what it runs.
 * Add a command by adding a file next to this one and a line here.
 */
export const COMMANDS: Readonly<Record<string, { readonly summary: string; load(): Promise<Command> }>> = {
  serve: {
    summary: "run services (all seven by default) on one port",
    load: async () => (await import("./serve.js")).serveCommand,
  },
  migrate: {
    summary: "bring the database schema up to date and exit",
    load: async () => (await import("./migrate.js")).migrateCommand,
  },
  sign: {
    summary: "run a signing job with a progress bar and print a verified summary",
    load: async () => (await import("./sign.js")).signCommand,
  },
  register: {
    summary: "create a user (password from the terminal or --password-stdin)",
    load: async () => (await import("./register.js")).registerCommand,
  },
  login: {
    summary: "log in and store the session token for later commands",
    load: async () => (await import("./login.js")).loginCommand,
  },
  logout: {
    summary: "revoke the stored session token and forget it",
    load: async () => (await import("./logout.js")).logoutCommand,
  },
  whoami: {
    summary: "show who the mesh takes you for",
    load: async () => (await import("./whoami.js")).whoamiCommand,
  },
  admin: {
    summary: "grant or revoke a user's admin role (run by the operator, against the database)",
    load: async () => (await import("./admin.js")).adminCommand,
  },
  keys: {
    summary: "create, list and choose your key pairs (messaging and signing)",
    load: async () => (await import("./keys.js")).keysCommand,
  },
  messages: {
    summary: "send, list, read and watch encrypted messages",
    load: async () => (await import("./messages.js")).messagesCommand,
  },
  worker: {
    summary: "run a background worker alone (rewrap: re-encrypt private keys after a rotation)",
    load: async () => (await import("./worker.js")).workerCommand,
  },
  top: { summary: "live view of a running mesh: jobs, records/s, keys busy, errors", load: async () => (await import("./top.js")).topCommand },
  verify: {
    summary: "re-verify every stored signature against its key's public key",
    load: async () => (await import("./verify.js")).verifyCommand,
  },
  secrets: { summary: "store, read, version and share secrets in the vault", load: async () => (await import("./secrets.js")).secretsCommand },
  vault: { summary: "master-key status, rotation, rewrap and retirement", load: async () => (await import("./vault.js")).vaultCommand },
  audit: { summary: "print (and follow) the mesh's audit trail", load: async () => (await import("./audit.js")).auditCommand },
};
