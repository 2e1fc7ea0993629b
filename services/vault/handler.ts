import { create } from "@bufbuild/protobuf";
import { Code, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  AuditEventSchema,
  AuditOutcome,
  MasterKeyVersionStatusSchema,
  SecretMetadataSchema,
  VersionMetadataSchema,
  VersionState,
  type SecretMetadata,
  type VersionMetadata,
} from "../../gen/keymesh/vault/v1/vault_pb.js";
import { VaultService } from "../../gen/keymesh/vault/v1/vault_service_pb.js";
import { audited, isAdmin, type AuditLog, type StoredAuditEvent } from "../shared/audit/index.js";
import { principalKey, type Principal } from "../shared/context.js";
import type { JobQueue } from "../shared/coordination/types.js";
import type { MasterKeyManager } from "../shared/crypto/rotation/master-key-manager.js";
import { rewrapSets, rowsUnder } from "../shared/crypto/rotation/rewrap.js";
import type { SealedRowSets } from "../shared/crypto/rotation/sealed-row-set.js";
import { DomainError, InvalidInputError } from "../shared/errors.js";
import { pageSize } from "./limits.js";
import type { SecretRow, VersionRow } from "./store.js";
import type { SecretRef, Vault } from "./vault.js";

/** Dependencies of the VaultService handler. */
export interface VaultHandlerDeps {
  readonly vault: Vault;
  readonly audit: AuditLog;
  readonly masterKeys: MasterKeyManager;
  readonly sets: SealedRowSets;
  /** Where rotations queue the background rewrap. */
  readonly rewrapQueue: JobQueue;
  /** The keys service's private-key rewrap queue: the mesh-wide rotation moves those too. */
  readonly keyRewrapQueue: JobQueue;
}

const STATES = { active: VersionState.ACTIVE, deleted: VersionState.DELETED, destroyed: VersionState.DESTROYED } as const;
const OUTCOMES = { ok: AuditOutcome.OK, denied: AuditOutcome.DENIED, error: AuditOutcome.ERROR } as const;

const secretProto = (s: SecretRow): SecretMetadata =>
  create(SecretMetadataSchema, {
    secretId: s.id,
    name: s.name ?? "",
    labels: { ...s.labels },
    ownerId: s.owner,
    currentVersion: s.currentVersion,
    createdAtMs: BigInt(s.createdAt),
    updatedAtMs: BigInt(s.updatedAt),
  });

const versionProto = (v: VersionRow): VersionMetadata =>
  create(VersionMetadataSchema, {
    version: v.version,
    state: STATES[v.state],
    createdAtMs: BigInt(v.createdAt),
    deletedAtMs: BigInt(v.deletedAt ?? 0),
    masterKeyVersion: v.masterKeyVersion,
    size: v.size,
  });

const eventProto = (e: StoredAuditEvent) =>
  create(AuditEventSchema, {
    eventId: e.id,
    timeMs: BigInt(e.timeMs),
    principalId: e.principal,
    peer: e.peer,
    method: e.method,
    objectHmac: e.objectHmac,
    objectKind: e.objectKind,
    version: e.version,
    outcome: OUTCOMES[e.outcome],
    code: e.code === "ok" ? "" : e.code,
  });

function ref(selector: { case: "secretId" | "name" | undefined; value?: string }): SecretRef {
  if (selector.case === "secretId") return { id: selector.value ?? "" };
  if (selector.case === "name") return { name: selector.value ?? "" };
  throw new InvalidInputError("name the secret: set secret_id or name");
}

function requireAdmin(p: Principal): void {
  if (!isAdmin(p)) throw new DomainError(Code.PermissionDenied, "this call is reserved for administrators");
}

const principal = (ctx: HandlerContext) => ctx.values.get(principalKey);

/** VaultService: thin translation between protos and the vault, every call audited. */
export function createVaultHandler(deps: VaultHandlerDeps): ServiceImpl<typeof VaultService> {
  const { vault, audit, masterKeys, sets } = deps;

  async function status() {
    const states = await masterKeys.states();
    const ring = masterKeys.ring();
    const perSet = await Promise.all(sets.list().map(async (s) => [s.name, await s.countByVersion()] as const));
    const versions = new Set([...states.keys(), ...perSet.flatMap(([, m]) => [...m.keys()])]);
    return [...versions].sort((a, b) => a - b).map((version) => {
      const rowsBySet: Record<string, bigint> = {};
      let total = 0;
      for (const [name, counts] of perSet) {
        const n = counts.get(version) ?? 0;
        rowsBySet[name] = BigInt(n);
        total += n;
      }
      return create(MasterKeyVersionStatusSchema, {
        version,
        primary: version === ring.primaryVersion,
        retired: states.get(version) === "retired",
        rowCount: BigInt(total),
        rowsBySet,
      });
    });
  }

  return {
    createSecret: (req, ctx) =>
      audited(audit, ctx, async (scope) => {
        const r = await vault.createSecret(principal(ctx), { name: req.name, value: req.value, labels: req.labels }, scope);
        return { secret: secretProto(r.secret), version: r.version };
      }),

    getSecret: (req, ctx) =>
      audited(audit, ctx, async (scope) => {
        const r = await vault.getSecret(principal(ctx), ref(req.selector), req.version, scope);
        return { secret: secretProto(r.secret), version: r.version, value: r.value };
      }),

    addSecretVersion: (req, ctx) =>
      audited(audit, ctx, async (scope) => {
        const r = await vault.addVersion(principal(ctx), ref(req.selector), req.value, req.expectedVersion, scope);
        return { secret: secretProto(r.secret), version: r.version };
      }),

    getSecretMetadata: (req, ctx) =>
      audited(audit, ctx, async (scope) => {
        const r = await vault.metadata(principal(ctx), ref(req.selector), scope);
        return { secret: secretProto(r.secret), versions: r.versions.map(versionProto) };
      }),

    listSecrets: (req, ctx) =>
      audited(audit, ctx, async () => {
        const r = await vault.list(principal(ctx), req.namePrefix, req.pageToken, pageSize(req.pageSize));
        return { secrets: r.secrets.map(secretProto), nextPageToken: r.nextPageToken };
      }),

    deleteSecretVersion: (req, ctx) =>
      audited(audit, ctx, async (scope) => ({ version: versionProto(await vault.changeState(principal(ctx), req.secretId, req.version, "delete", scope)) })),

    undeleteSecretVersion: (req, ctx) =>
      audited(audit, ctx, async (scope) => ({ version: versionProto(await vault.changeState(principal(ctx), req.secretId, req.version, "undelete", scope)) })),

    destroySecretVersion: (req, ctx) =>
      audited(audit, ctx, async (scope) => ({ version: versionProto(await vault.changeState(principal(ctx), req.secretId, req.version, "destroy", scope)) })),

    grantSecretAccess: (req, ctx) =>
      audited(audit, ctx, async (scope) => {
        await vault.grant(principal(ctx), req.secretId, req.principalId, scope);
        return {};
      }),

    revokeSecretAccess: (req, ctx) =>
      audited(audit, ctx, async (scope) => {
        await vault.revoke(principal(ctx), req.secretId, req.principalId, scope);
        return {};
      }),

    rotateMasterKey: (_req, ctx) =>
      audited(audit, ctx, async (scope) => {
        requireAdmin(principal(ctx));
        const r = await masterKeys.rotate();
        scope.object = { kind: "master_key", id: String(r.primary) };
        scope.version = r.primary;
        // The rotation has happened; a queue that is down only delays the rewrap (a vault
        // process queues it at its next start, and `Rewrap` runs it on demand), so the call
        // still succeeds and says so rather than inviting a second rotation.
        const rewrapQueued = await deps.rewrapQueue.enqueue({ reason: "rotate", primary: String(r.primary) }).then(
          () => true,
          () => false,
        );
        // The primary is mesh-wide: the keys service's workers rewrap its private keys (one
        // of them walks its tables and queues the chunks; see rewrap-chunks.ts).
        await deps.keyRewrapQueue.enqueue({ scan: "vault-rotate", primary: String(r.primary) }).catch(() => undefined);
        return { primaryVersion: r.primary, previousVersion: r.previous, rewrapQueued };
      }),

    rewrap: (req, ctx) =>
      audited(audit, ctx, async () => {
        requireAdmin(principal(ctx));
        await masterKeys.refresh();
        const r = await rewrapSets(sets.list(), { ring: masterKeys.ring, limit: req.limit, signal: ctx.signal });
        return { rewrapped: BigInt(r.rewrapped), remaining: BigInt(r.remaining) };
      }),

    getMasterKeyStatus: (_req, ctx) =>
      audited(audit, ctx, async () => {
        requireAdmin(principal(ctx));
        await masterKeys.refresh();
        return { versions: await status() };
      }),

    retireMasterKey: (req, ctx) =>
      audited(audit, ctx, async (scope) => {
        requireAdmin(principal(ctx));
        scope.object = { kind: "master_key", id: String(req.version) };
        scope.version = req.version;
        await masterKeys.retire(req.version, () => rowsUnder(sets.list(), req.version));
        return { versions: await status() };
      }),

    listAuditEvents: (req, ctx) =>
      audited(audit, ctx, async () => {
        requireAdmin(principal(ctx));
        const limit = req.pageSize === 0 ? 100 : Math.min(req.pageSize, 1000);
        const id = /^\d{1,18}$/;
        if (req.pageToken !== "" && !id.test(req.pageToken)) throw new InvalidInputError("page_token is not one this server issued");
        if (req.afterEventId !== "" && !id.test(req.afterEventId)) throw new InvalidInputError("after_event_id must be an event id");
        const events = await audit.list({
          limit,
          ...(req.afterEventId !== "" ? { afterId: req.afterEventId } : {}),
          ...(req.pageToken !== "" ? { beforeId: req.pageToken } : {}),
          sinceMs: Number(req.sinceMs),
          objectId: req.objectId,
        });
        const next = req.afterEventId === "" && events.length === limit ? events[events.length - 1]!.id : "";
        return { events: events.map(eventProto), nextPageToken: next };
      }),
  };
}
