/**
 * Where sealed values live, for the envelope's associated data. The keyring context is shared
 * by the key service (which seals) and the signing service (the only one that opens).
 */
export const keyringSealContext = (id: string) => ({ table: "keyring_keys", column: "private_key", id });
