-- Indexes behind the dashboard's pages. Every listing is newest first and
-- pages by (created_at, id), so each filter gets an index in that order and
-- a page reads about one page of index entries, however many rows there are.

-- Events: all, by provider, by type. text_pattern_ops serves both `type = x`
-- and the prefix search `type LIKE 'github.%'` in any database collation.
CREATE INDEX IF NOT EXISTS mfo_events_created_id ON mfo_events (created_at, id);
CREATE INDEX IF NOT EXISTS mfo_events_provider_created
    ON mfo_events (provider, created_at, id);
CREATE INDEX IF NOT EXISTS mfo_events_type_pattern_created
    ON mfo_events (type text_pattern_ops, created_at, id);

-- Deliveries: all, by status, by event type; the subscription filter uses
-- mfo_deliveries_subscription.
CREATE INDEX IF NOT EXISTS mfo_deliveries_created_id
    ON mfo_deliveries (created_at, id);
CREATE INDEX IF NOT EXISTS mfo_deliveries_status_created
    ON mfo_deliveries (status, created_at, id);
CREATE INDEX IF NOT EXISTS mfo_deliveries_type_created
    ON mfo_deliveries (event_type text_pattern_ops, created_at, id);
-- The last hour's delivered and failed counters, read from the index alone.
CREATE INDEX IF NOT EXISTS mfo_deliveries_finished
    ON mfo_deliveries (finished_at, status) WHERE finished_at IS NOT NULL;
-- The last error of each subscription.
CREATE INDEX IF NOT EXISTS mfo_deliveries_subscription_error
    ON mfo_deliveries (subscription_id, updated_at) WHERE last_error IS NOT NULL;

-- Pipeline runs: all, and by pipeline; the status filter uses
-- mfo_pipeline_runs_status.
CREATE INDEX IF NOT EXISTS mfo_pipeline_runs_created_id
    ON mfo_pipeline_runs (created_at, id);
CREATE INDEX IF NOT EXISTS mfo_pipeline_runs_pipeline_created
    ON mfo_pipeline_runs (pipeline, created_at, id);
