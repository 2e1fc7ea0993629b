import { AuthService } from "../../gen/keymesh/auth/v1/auth_service_pb.js";
import { parseFlags } from "../flags.js";
import { EXIT, UsageError, type Command } from "../command.js";
import { connectTo, meshUrl } from "../connect.js";
import { credentialsPath, storeSession } from "../credentials.js";
import { readPassword } from "../password.js";

const USAGE = `Usage: keymesh login USERNAME [options]

Logs in and stores the session token for this mesh URL in the user's config directory
($XDG_CONFIG_HOME/keymesh/credentials.json, default ~/.config/keymesh, mode 0600); every
other command then sends it. The password is read without echo from the terminal, or from
the first line of stdin with --password-stdin.

Options:
  --password-stdin   read the password from stdin
  --ttl SECONDS      session lifetime (default: the server's, 12 hours; at most 30 days)
  --url URL          the mesh (default $KEYMESH_URL or http://127.0.0.1:8080)`;

/** `keymesh login USERNAME`: exchanges a password for a stored session token. */
export const loginCommand: Command = {
  name: "login",
  summary: "log in and store the session token for later commands",
  usage: USAGE,
  async run(args, io) {
    const { values, positionals } = parseFlags(args, { "password-stdin": { type: "boolean", default: false }, ttl: { type: "string" }, url: { type: "string" } }, true);
    const [username, ...extra] = positionals;
    if (username === undefined || extra.length > 0) throw new UsageError("expected exactly one USERNAME");
    const ttlSeconds = values.ttl === undefined ? 0 : Number(values.ttl);
    if (values.ttl !== undefined && (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > 0xffffffff)) throw new UsageError(`--ttl must be a positive number of seconds, got "${values.ttl}"`);
    const password = await readPassword(io, { fromStdin: values["password-stdin"] });
    const url = meshUrl(values.url, io.env);
    const res = await connectTo(url, undefined, io.env)(AuthService).login({ username, password, ttlSeconds });
    storeSession(io.env, url, { token: res.token, username, expiresAtMs: Number(res.expiresAtMs) });
    io.stdout.write(`logged in to ${url} as ${username} until ${new Date(Number(res.expiresAtMs)).toISOString()} (token in ${credentialsPath(io.env)})\n`);
    return EXIT.ok;
  },
};
