import { InvalidInputError } from "../shared/errors.js";

/**
 * The vault's input rules, checked before anything is read or written. Each violation is
 * an InvalidArgument whose message says what is allowed; nothing is echoed back that could
 * be a secret (values never, names only by length).
 */

export const MAX_VALUE_BYTES = 64 * 1024;
export const MAX_NAME_CHARS = 255;
export const MAX_LABELS = 64;
export const MAX_LABEL_KEY_CHARS = 63;
export const MAX_LABEL_VALUE_CHARS = 255;
export const MAX_PRINCIPAL_CHARS = 160;
export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 1000;

const NAME = /^[A-Za-z0-9/_.-]+$/;
const LABEL_KEY = /^[a-z][a-z0-9_.-]*$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const PRINCIPAL = /^(user|service):[A-Za-z0-9@._:-]+$/;

export function checkValue(value: Uint8Array): void {
  if (value.length === 0) throw new InvalidInputError("value is empty; a secret needs at least 1 byte");
  if (value.length > MAX_VALUE_BYTES) {
    throw new InvalidInputError(`value is ${value.length} bytes; the limit is ${MAX_VALUE_BYTES} bytes (64 KiB)`);
  }
}

export function checkName(name: string): void {
  if (name.length === 0 || name.length > MAX_NAME_CHARS) {
    throw new InvalidInputError(`name must be 1-${MAX_NAME_CHARS} characters, got ${name.length}`);
  }
  if (!NAME.test(name)) throw new InvalidInputError("name may contain only letters, digits and / _ . -");
}

export function checkLabels(labels: Readonly<Record<string, string>>): void {
  const keys = Object.keys(labels);
  if (keys.length > MAX_LABELS) throw new InvalidInputError(`at most ${MAX_LABELS} labels, got ${keys.length}`);
  for (const key of keys) {
    if (key.length > MAX_LABEL_KEY_CHARS || !LABEL_KEY.test(key)) {
      throw new InvalidInputError(
        `label key "${key.slice(0, MAX_LABEL_KEY_CHARS)}" must be 1-${MAX_LABEL_KEY_CHARS} characters: a lowercase letter, then lowercase letters, digits, _ . -`,
      );
    }
    if (labels[key]!.length > MAX_LABEL_VALUE_CHARS) {
      throw new InvalidInputError(`label "${key}" has a value of ${labels[key]!.length} characters; the limit is ${MAX_LABEL_VALUE_CHARS}`);
    }
  }
}

export function checkSecretId(id: string): void {
  if (!UUID.test(id)) throw new InvalidInputError("secret_id must be a lowercase UUID such as 0f8fad5b-d9cb-469f-a165-70867728950e");
}

export function checkVersion(version: number, what = "version"): void {
  if (!Number.isInteger(version) || version < 1) throw new InvalidInputError(`${what} must be a version number from 1`);
}

export function checkPrincipalId(id: string): void {
  if (id.length > MAX_PRINCIPAL_CHARS || !PRINCIPAL.test(id)) {
    throw new InvalidInputError('principal_id must look like "user:<id>" or "service:<name>"');
  }
}

export function pageSize(requested: number): number {
  if (requested === 0) return DEFAULT_PAGE_SIZE;
  return Math.min(requested, MAX_PAGE_SIZE);
}
