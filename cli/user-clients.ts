import { connectTo, meshUrl } from "./connect.js";

type Env = Readonly<Record<string, string | undefined>>;

/** Flags of the commands that act as a user (keys, messages). */
export const USER_FLAGS = { url: { type: "string" }, token: { type: "string" } } as const;

export const USER_FLAGS_USAGE = `  --url URL     the mesh (default $KEYMESH_URL or http://127.0.0.1:8080)
  --token TOK   session token (default $KEYMESH_TOKEN, then the one \`keymesh login\` stored)`;

/** Clients acting as the user whose token the flags or the environment give. */
export function userClients(values: { url?: string | undefined; token?: string | undefined }, env: Env) {
  const url = meshUrl(values.url, env);
  const token = values.token ?? env.KEYMESH_TOKEN;
  return { url, client: connectTo(url, token) };
}
