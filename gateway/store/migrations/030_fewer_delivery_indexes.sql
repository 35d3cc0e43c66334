-- Every delivery insert and update writes an entry in each index of
-- mfo_deliveries, so two that others cover are dropped: (status,
-- next_attempt_at) is served by mfo_deliveries_status_created for the status
-- and by mfo_deliveries_pending_due for due times, and (created_at) by
-- mfo_deliveries_created_id.
DROP INDEX IF EXISTS mfo_deliveries_status;
DROP INDEX IF EXISTS mfo_deliveries_created;
