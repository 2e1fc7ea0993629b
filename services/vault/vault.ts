import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { isAdmin, principalIdOf, type AuditScope } from "../shared/audit/index.js";
import type { Principal } from "../shared/context.js";
import { open, seal, sealedVersion, type MasterKeyring, type SealContext } from "../shared/crypto/envelope.js";
import { DomainError, InvalidInputError, NotFoundError, PreconditionError, SealedDataError } from "../shared/errors.js";
import { checkLabels, checkName, checkPrincipalId, checkSecretId, checkValue, checkVersion } from "./limits.js";
import { NameTakenError, type SecretRow, type Selector, type VaultStore, type VersionRow, type VersionState } from "./store.js";

/**
 * The vault's rules: who may do what with a secret, how values are sealed, versions and
 * their states. Handlers translate protos; this file decides.
 *
 * - A secret belongs to the principal that created it. Others get NotFound, worded exactly as
 *   for a secret that does not exist, unless the owner granted them read access.
 * - Administrators manage every secret; their reads are audited like anyone's.
 * - Values are sealed with AES-256-GCM under the mesh's primary master key, bound to
 *   (secret id, version): a ciphertext moved to another row or version does not open.
 */

/** Where a version's value lives, for the envelope's associated data. */
export const secretSealContext = (secretId: string, version: number): SealContext => ({
  table: "secret_versions",
  column: "ciphertext",
  id: secretId,
  rowVersion: version,
});

/** Which secret a call names: by id, or by name in the caller's namespace. */
export type SecretRef = { readonly id: string } | { readonly name: string };

/** A caller is not allowed to do this to a secret they can see (read-only grantees). */
export class PermissionError extends DomainError {
  constructor(message: string) {
    super(Code.PermissionDenied, message);
  }
}

/** Dependencies of `createVault`. */
export interface VaultDeps {
  readonly store: VaultStore;
  readonly ring: () => MasterKeyring;
  readonly now?: () => number;
}

type Access = "owner" | "admin" | "grantee";

const HIDDEN = (ref: SecretRef) => new NotFoundError("id" in ref ? `secret ${ref.id} not found` : "no secret with that name");

function callerId(p: Principal): string {
  const id = principalIdOf(p);
  if (id === "anonymous") throw new DomainError(Code.Unauthenticated, "the vault needs credentials: log in or present a service token");
  return id;
}

function checkRef(ref: SecretRef): void {
  if ("id" in ref) checkSecretId(ref.id);
  else checkName(ref.name);
}

/** Creates the vault's domain logic. */
export function createVault(deps: VaultDeps) {
  const { store } = deps;
  const now = deps.now ?? Date.now;

  /** Finds a secret the caller can see and how; NotFound (no hint) otherwise. */
  async function resolve(p: Principal, ref: SecretRef, scope: AuditScope): Promise<{ secret: SecretRow; access: Access }> {
    const me = callerId(p);
    checkRef(ref);
    if ("id" in ref) scope.object = { kind: "secret", id: ref.id };
    const secret = await store.find("id" in ref ? { id: ref.id } : { owner: me, name: ref.name });
    if (secret !== undefined) {
      scope.object = { kind: "secret", id: secret.id };
      if (secret.owner === me) return { secret, access: "owner" };
      if (isAdmin(p)) return { secret, access: "admin" };
      if (await store.hasGrant(secret.id, me)) return { secret, access: "grantee" };
      throw HIDDEN(ref);
    }
    if ("name" in ref) {
      const granted = await store.findGranted(me, ref.name);
      if (granted.length > 1) throw new PreconditionError("several secrets shared with you have that name; use the secret id");
      if (granted.length === 1) {
        scope.object = { kind: "secret", id: granted[0]!.id };
        return { secret: granted[0]!, access: "grantee" };
      }
    }
    throw HIDDEN(ref);
  }

  function requireManage(access: Access): void {
    if (access === "grantee") throw new PermissionError("you have read access to this secret; only its owner or an administrator can change it");
  }

  function sealVersion(secretId: string, version: number, value: Uint8Array): { ciphertext: Buffer; masterKeyVersion: number } {
    const ring = deps.ring();
    return { ciphertext: seal(ring, value, secretSealContext(secretId, version)), masterKeyVersion: ring.primaryVersion };
  }

  function newVersion(secretId: string, version: number, value: Uint8Array, t: number): VersionRow {
    const sealed = sealVersion(secretId, version, value);
    return { secretId, version, state: "active", size: value.length, createdAt: t, deletedAt: null, ...sealed };
  }

  async function createSecret(p: Principal, req: { name: string; value: Uint8Array; labels: Record<string, string> }, scope: AuditScope) {
    const me = callerId(p);
    if (req.name !== "") checkName(req.name);
    checkValue(req.value);
    checkLabels(req.labels);
    const id = randomUUID();
    scope.object = { kind: "secret", id };
    scope.version = 1;
    const t = now();
    const secret: SecretRow = { id, owner: me, name: req.name === "" ? null : req.name, labels: { ...req.labels }, currentVersion: 1, createdAt: t, updatedAt: t };
    try {
      await store.create(secret, newVersion(id, 1, req.value, t));
    } catch (err) {
      if (err instanceof NameTakenError) throw new DomainError(Code.AlreadyExists, "you already have a secret with that name; add a version to it instead");
      throw err;
    }
    return { secret, version: 1 };
  }

  return {
    createSecret,

    /** The value of a version (0: newest active), opened and checked. */
    async getSecret(p: Principal, ref: SecretRef, version: number, scope: AuditScope) {
      if (version !== 0) checkVersion(version);
      const me = callerId(p);
      checkRef(ref);
      // Fast path: one query for the owner's own secret and the version.
      const selector: Selector = "id" in ref ? { id: ref.id } : { owner: me, name: ref.name };
      if ("id" in ref) scope.object = { kind: "secret", id: ref.id };
      let found = await store.read(selector, version);
      if (found === undefined || found.secret.owner !== me) {
        const { secret } = await resolve(p, ref, scope);
        found = await store.read({ id: secret.id }, version);
        if (found === undefined) {
          throw new NotFoundError(version === 0 ? "the secret has no active version" : `the secret has no version ${version}`);
        }
      }
      const { secret, version: row } = found;
      scope.object = { kind: "secret", id: secret.id };
      scope.version = row.version;
      if (row.state !== "active" || row.ciphertext === null) {
        throw new PreconditionError(`version ${row.version} is ${row.state}${row.state === "deleted" ? "; undelete it to read it" : ""}`);
      }
      // The envelope names its master-key version; the row records it too. A mismatch is
      // tampering (DataLoss); a matching version whose key is not loaded is an operator's
      // configuration problem (FailedPrecondition from UnknownMasterKeyError).
      if (sealedVersion(row.ciphertext) !== row.masterKeyVersion) {
        throw new SealedDataError(`sealed value for secret ${secret.id} version ${row.version} names the wrong master-key version`);
      }
      const value = open(deps.ring(), row.ciphertext, secretSealContext(secret.id, row.version));
      return { secret, version: row.version, value };
    },

    /** Appends a version; `expected` is the check-and-set (undefined: none; 0: create only). */
    async addVersion(p: Principal, ref: SecretRef, value: Uint8Array, expected: number | undefined, scope: AuditScope) {
      checkValue(value);
      if (expected === 0) {
        if (!("name" in ref)) throw new PreconditionError("check-and-set 0 means \"create only\" and needs a name; this secret exists");
        checkName(ref.name);
        try {
          return await createSecret(p, { name: ref.name, value, labels: {} }, scope);
        } catch (err) {
          if (err instanceof DomainError && err.code === Code.AlreadyExists) {
            throw new PreconditionError("check-and-set failed: the secret already exists (expected none)");
          }
          throw err;
        }
      }
      const { secret, access } = await resolve(p, ref, scope);
      requireManage(access);
      for (let current = secret.currentVersion; ; ) {
        if (expected !== undefined && expected !== current) {
          throw new PreconditionError(`check-and-set failed: the current version is ${current}, not ${expected}`);
        }
        const t = now();
        const next = current + 1;
        scope.version = next;
        if (await store.addVersion(newVersion(secret.id, next, value, t), current)) {
          return { secret: { ...secret, currentVersion: next, updatedAt: t }, version: next };
        }
        const fresh = await store.find({ id: secret.id });
        if (fresh === undefined) throw HIDDEN(ref);
        current = fresh.currentVersion;
      }
    },

    /**
     * Who may see the secret is decided on the primary (a revoked grant takes effect at once);
     * its versions come from the read replica, unless the replica has not seen them all yet
     * (a version added moments ago): then from the primary, so the list never misses a
     * version the secret counts. A version's state (deleted, destroyed) may trail by the lag.
     */
    async metadata(p: Principal, ref: SecretRef, scope: AuditScope) {
      const { secret } = await resolve(p, ref, scope);
      const versions = await store.versions(secret.id);
      return { secret, versions: versions.length >= secret.currentVersion ? versions : await store.versions(secret.id, true) };
    },

    async list(p: Principal, prefix: string, pageToken: string, limit: number) {
      const me = callerId(p);
      if (prefix !== "" && (prefix.length > 255 || !/^[A-Za-z0-9/_.-]+$/.test(prefix))) {
        throw new InvalidInputError("name_prefix may contain only letters, digits and / _ . -");
      }
      const after = pageToken === "" ? undefined : decodeToken(pageToken);
      const rows = await store.list(me, prefix, after, limit + 1);
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      const next = rows.length > limit && last !== undefined ? encodeToken({ name: last.name ?? "", id: last.id }) : "";
      return { secrets: page, nextPageToken: next };
    },

    /** Changes a version's state: delete (active→deleted), undelete (deleted→active), destroy (any→destroyed). */
    async changeState(p: Principal, id: string, version: number, action: "delete" | "undelete" | "destroy", scope: AuditScope) {
      checkVersion(version);
      const { secret, access } = await resolve(p, { id }, scope);
      requireManage(access);
      scope.version = version;
      const from: VersionState[] = action === "delete" ? ["active"] : action === "undelete" ? ["deleted"] : ["active", "deleted"];
      const to: VersionState = action === "delete" ? "deleted" : action === "undelete" ? "active" : "destroyed";
      const after = await store.setState(secret.id, version, from, to, now());
      if (after !== undefined) return after;
      const row = await store.version(secret.id, version);
      if (row === undefined) throw new NotFoundError(`the secret has no version ${version}`);
      throw new PreconditionError(`version ${version} is ${row.state}; cannot ${action} it`);
    },

    async grant(p: Principal, id: string, grantee: string, scope: AuditScope) {
      checkPrincipalId(grantee);
      const { secret, access } = await resolve(p, { id }, scope);
      requireManage(access);
      await store.grant(secret.id, grantee, callerId(p), now());
    },

    async revoke(p: Principal, id: string, grantee: string, scope: AuditScope) {
      checkPrincipalId(grantee);
      const { secret, access } = await resolve(p, { id }, scope);
      requireManage(access);
      if (!(await store.revoke(secret.id, grantee))) throw new NotFoundError("that principal has no grant on this secret");
    },
  };
}

/** The vault's domain API. */
export type Vault = ReturnType<typeof createVault>;

function encodeToken(cursor: { name: string; id: string }): string {
  return Buffer.from(JSON.stringify([cursor.name, cursor.id]), "utf8").toString("base64url");
}

function decodeToken(token: string): { name: string; id: string } {
  try {
    const [name, id] = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as [unknown, unknown];
    if (typeof name === "string" && typeof id === "string") return { name, id };
  } catch {
    // fall through
  }
  throw new InvalidInputError("page_token is not one this server issued; start again without it");
}
