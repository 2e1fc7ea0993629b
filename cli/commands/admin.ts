import { createUserStore } from "../../services/auth/user-store.js";
import { loadConfig } from "../../services/shared/config.js";
import { createDatabase } from "../../services/shared/storage/database.js";
import { parseFlags } from "../flags.js";
import { EXIT, UsageError, type Command } from "../command.js";

const USAGE = `Usage: keymesh admin grant|revoke USERNAME

Grants or revokes the admin role of a registered user, directly in the database
(KEYMESH_DATABASE_URL, default: SQLite under KEYMESH_DATA_DIR). This is how the first admin
comes to be: the operator, who holds the database credentials, runs it once; further admins
can be made the same way. Sessions pick the change up at their next call.`;

/** `keymesh admin grant|revoke USERNAME`: the operator's way to make (or unmake) an admin. */
export const adminCommand: Command = {
  name: "admin",
  summary: "grant or revoke a user's admin role (run by the operator, against the database)",
  usage: USAGE,
  async run(args, io) {
    const { positionals } = parseFlags(args, {}, true);
    const [verb, username, ...extra] = positionals;
    if ((verb !== "grant" && verb !== "revoke") || username === undefined || extra.length > 0) {
      throw new UsageError("expected `grant USERNAME` or `revoke USERNAME`");
    }
    const config = loadConfig(io.env);
    const db = createDatabase({ ...(config.databaseUrl === undefined ? {} : { url: config.databaseUrl }), dataDir: config.dataDir });
    try {
      const found = await createUserStore(db).setAdmin(username, verb === "grant");
      if (!found) {
        io.stderr.write(`keymesh admin: no user "${username}" (register it first with \`keymesh register ${username}\`)\n`);
        return EXIT.failure;
      }
      io.stdout.write(`${verb === "grant" ? "granted" : "revoked"} admin ${verb === "grant" ? "to" : "from"} ${username}\n`);
      return EXIT.ok;
    } finally {
      await db.close();
    }
  },
};
