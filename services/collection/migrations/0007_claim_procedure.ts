import { procedureMigration } from "../../shared/storage/migrations/index.js";

/**
 * A fresh claim in one round trip on MySQL/MariaDB: `keymesh_claim_fresh` finds the first
 * `p_size` records after the highest id any claim covers, inserts the claim over their range
 * (its unique `fresh_first` is the range's first id, so of two claims that read the same end
 * at once the second insert fails with a duplicate key and that caller reads again), and
 * selects the claimed records, ascending. No record left: an empty result and no claim. No
 * transaction: the read changes nothing, and the insert is the claim (as
 * services/collection/store.ts runs the same two statements one by one on SQLite).
 */
const CREATE = `CREATE PROCEDURE keymesh_claim_fresh(
  IN p_claim_id VARCHAR(64), IN p_job_id VARCHAR(64), IN p_claimant VARCHAR(128), IN p_size INT,
  IN p_now BIGINT, IN p_expires_at BIGINT)
BEGIN
  DECLARE v_first BIGINT;
  DECLARE v_last BIGINT;
  DECLARE v_count INT DEFAULT 0;
  SELECT MIN(t.id), MAX(t.id), COUNT(*) INTO v_first, v_last, v_count
    FROM (SELECT r.id FROM records r WHERE r.id > (SELECT COALESCE(MAX(last_id), 0) FROM claims) ORDER BY r.id LIMIT p_size) t;
  IF v_count > 0 THEN
    INSERT INTO claims (id, job_id, claimant, size, claimed, claimed_at, expires_at, first_id, last_id, fresh_first, state)
      VALUES (p_claim_id, p_job_id, p_claimant, p_size, v_count, p_now, p_expires_at, v_first, v_last, v_first, 'open');
  END IF;
  SELECT id, payload FROM records WHERE v_count > 0 AND id BETWEEN v_first AND v_last ORDER BY id;
END`;

/** Collection 0007: a fresh claim as a stored procedure on MySQL/MariaDB. */
export const claimProcedureMigration = procedureMigration("0007_claim_procedure", "keymesh_claim_fresh", CREATE);
