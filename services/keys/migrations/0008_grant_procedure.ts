import { procedureMigration } from "../../shared/storage/migrations/index.js";

/**
 * The grant as one round trip on MySQL/MariaDB: `keymesh_open_key_grant` starts a transaction,
 * locks the least recently used released key not in `p_exclude` (a comma-separated list of key
 * ids, which never contain commas) with FOR UPDATE SKIP LOCKED — or, when none is released,
 * the key whose lease lapsed longest ago, found by a plain read and then locked alone — and
 * writes its new lease: the fence moves by one, the last use is the grant's date (`p_now`, or
 * the end of the key's previous lease if that is later: `p_now` was read before the row was
 * locked), the lease hash is stored, an earlier lease never released is marked lapsed, and the lease's history row is
 * inserted. It selects the key as it was (its new fence, its last use and lease expiry before
 * this grant, its public and sealed private key) and returns with the transaction open: the
 * key service takes the key's Redlock lock, then commits, or rolls back and tries the next
 * key. No key free: an empty result and nothing open. Any error rolls back.
 *
 * The same statements as services/keys/keyring-store.ts runs one by one on SQLite (where a
 * statement is a function call, not a round trip). Replacing the procedure means a new
 * migration that drops and creates it.
 */
const CREATE = `CREATE PROCEDURE keymesh_open_key_grant(
  IN p_now BIGINT, IN p_ttl_ms BIGINT, IN p_holder VARCHAR(128), IN p_lease_hash BINARY(32), IN p_exclude TEXT)
BEGIN
  DECLARE v_id VARCHAR(64) DEFAULT NULL;
  DECLARE v_fence BIGINT;
  DECLARE v_last_used BIGINT;
  DECLARE v_leased_until BIGINT;
  DECLARE v_public VARBINARY(32);
  DECLARE v_sealed VARBINARY(512);
  DECLARE v_candidate VARCHAR(64) DEFAULT NULL;
  DECLARE v_released BIGINT DEFAULT 0;
  DECLARE v_at BIGINT;
  DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
  DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
  START TRANSACTION;
  SELECT id, fence, last_used_at, leased_until, public_key, private_key_ciphertext
    INTO v_id, v_fence, v_last_used, v_leased_until, v_public, v_sealed
    FROM keyring_keys
    WHERE leased_until = 0 AND FIND_IN_SET(id, p_exclude) = 0
    ORDER BY last_used_at, id LIMIT 1 FOR UPDATE SKIP LOCKED;
  IF v_id IS NULL THEN
    SELECT id INTO v_candidate FROM keyring_keys
      WHERE leased_until > 0 AND leased_until <= p_now AND FIND_IN_SET(id, p_exclude) = 0
      ORDER BY leased_until LIMIT 1;
    IF v_candidate IS NOT NULL THEN
      SELECT id, fence, last_used_at, leased_until, public_key, private_key_ciphertext
        INTO v_id, v_fence, v_last_used, v_leased_until, v_public, v_sealed
        FROM keyring_keys
        WHERE id = v_candidate AND leased_until > 0 AND leased_until <= p_now FOR UPDATE SKIP LOCKED;
    END IF;
  END IF;
  IF v_id IS NULL THEN
    ROLLBACK;
  ELSE
    -- p_now was read before the row was locked: a release of this key may have committed in
    -- between. The grant is dated no earlier than the end of the lease before it.
    SELECT COALESCE(released_at, 0) INTO v_released FROM key_leases WHERE key_id = v_id AND fence = v_fence;
    SET v_at = GREATEST(p_now, v_released, v_last_used);
    UPDATE keyring_keys SET fence = v_fence + 1, leased_until = v_at + p_ttl_ms, holder = p_holder, last_used_at = v_at, lease_hash = p_lease_hash
      WHERE id = v_id AND fence = v_fence;
    IF v_leased_until > 0 THEN
      UPDATE key_leases SET lapsed_at = expires_at
        WHERE key_id = v_id AND released_at IS NULL AND lapsed_at IS NULL AND fence < v_fence + 1;
    END IF;
    INSERT INTO key_leases (lease_hash, key_id, fence, holder, acquired_at, previous_last_used_at, expires_at)
      VALUES (p_lease_hash, v_id, v_fence + 1, p_holder, v_at, v_last_used, v_at + p_ttl_ms);
  END IF;
  SELECT v_id AS id, v_fence + 1 AS fence, v_at AS granted_at, v_last_used AS last_used_at, v_leased_until AS leased_until, v_public AS public_key, v_sealed AS private_key_ciphertext
    FROM DUAL WHERE v_id IS NOT NULL;
END`;

/** Keys 0008: the grant transaction as a stored procedure on MySQL/MariaDB. */
export const grantProcedureMigration = procedureMigration("0008_grant_procedure", "keymesh_open_key_grant", CREATE);
