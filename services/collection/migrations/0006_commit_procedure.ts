import { procedureMigration } from "../../shared/storage/migrations/index.js";

/**
 * A batch's commit in three round trips on MySQL/MariaDB instead of six: the stored procedure
 * `keymesh_open_batch_commit` starts the transaction and makes its writes other than the
 * signatures, then returns with the transaction open; collection inserts the signatures and
 * commits (or rolls back when the insert is refused).
 *
 * When `p_new_key` (collection has not committed under the key since it started), it first
 * creates the key's fence row if there is none, in a statement of its own: concurrent first
 * commits of a key never race to create it inside their transactions. Then, in the
 * transaction, in this order (as services/collection/store.ts runs them one by one on SQLite,
 * and on MariaDB for a claim this process did not make):
 * - the claim is closed (`committed` when the whole claim is stored, else its expiry set to 0
 *   so the rest of its range is claimable at once) if it is still open, else `claim_closed`;
 * - the highest fence collection accepted for the key is raised to `p_fence`, unless this or a
 *   newer lease already committed (`stale_fence`); its row stays locked until the commit, so
 *   commits of one key are serialised in fence order;
 * - the batch's history row is written under its id; an id already committed is the caller's
 *   mistake (`batch_id_committed`), an earlier refused attempt's row is replaced.
 * It selects one row, `status`: `open` (the transaction is open, its writes made) or the
 * reason it refused (rolled back, nothing open). Any error rolls back.
 */
const CREATE = `CREATE PROCEDURE keymesh_open_batch_commit(
  IN p_new_key BOOLEAN, IN p_claim_id VARCHAR(64), IN p_whole BOOLEAN, IN p_key_id VARCHAR(64), IN p_fence BIGINT, IN p_at BIGINT,
  IN p_batch_id VARCHAR(64), IN p_job_id VARCHAR(64), IN p_size INT, IN p_claimed INT, IN p_start_at BIGINT,
  IN p_stored INT, IN p_rejected INT, IN p_executor VARCHAR(128))
BEGIN
  DECLARE v_taken VARCHAR(32) DEFAULT NULL;
  DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;
  DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
  proc: BEGIN
    IF p_new_key THEN
      -- The key's fence row, in a statement of its own before the transaction (see above).
      INSERT IGNORE INTO collection_key_fences (key_id, fence, updated_at) VALUES (p_key_id, 0, p_at);
    END IF;
    START TRANSACTION;
    IF p_whole THEN
      UPDATE claims SET state = 'committed' WHERE id = p_claim_id AND state = 'open';
    ELSE
      UPDATE claims SET expires_at = 0 WHERE id = p_claim_id AND state = 'open';
    END IF;
    IF ROW_COUNT() <> 1 THEN
      ROLLBACK;
      SELECT 'claim_closed' AS status;
      LEAVE proc;
    END IF;
    UPDATE collection_key_fences SET fence = p_fence, updated_at = p_at WHERE key_id = p_key_id AND fence < p_fence;
    IF ROW_COUNT() <> 1 THEN
      ROLLBACK;
      SELECT 'stale_fence' AS status;
      LEAVE proc;
    END IF;
    SELECT outcome INTO v_taken FROM batches WHERE id = p_batch_id;
    IF v_taken = 'committed' THEN
      ROLLBACK;
      SELECT 'batch_id_committed' AS status;
      LEAVE proc;
    END IF;
    IF v_taken IS NOT NULL THEN
      DELETE FROM batches WHERE id = p_batch_id;
    END IF;
    INSERT INTO batches (id, job_id, key_id, fence, size, claimed, start_at, committed_at, ended_at, outcome, stored, rejected, executor)
      VALUES (p_batch_id, p_job_id, p_key_id, p_fence, p_size, p_claimed, p_start_at, p_at, p_at, 'committed', p_stored, p_rejected, p_executor);
    SELECT 'open' AS status;
  END proc;
END`;

/** Collection 0006: the commit's writes before the signatures as a stored procedure on MySQL/MariaDB. */
export const commitProcedureMigration = procedureMigration("0006_commit_procedure", "keymesh_open_batch_commit", CREATE);
