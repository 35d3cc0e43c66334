-- Delivery settings per subscription, secret rotation and failure tracking.
ALTER TABLE mfo_subscriptions
    ADD COLUMN connect_timeout            double precision NOT NULL DEFAULT 5,
    ADD COLUMN max_in_flight              integer,
    ADD COLUMN rate_limit                 double precision,
    ADD COLUMN disable_after              double precision,
    ADD COLUMN failing_since              timestamptz,
    ADD COLUMN previous_secret            text,
    ADD COLUMN previous_secret_expires_at timestamptz;

-- job_key names the queue job last enqueued for a row, so the sweep can tell
-- whether that job is still alive. A replay delivers an event to the same
-- subscription again, so (event, subscription) is unique per replay number.
ALTER TABLE mfo_deliveries
    ADD COLUMN job_key          text,
    ADD COLUMN replay           integer NOT NULL DEFAULT 0,
    ADD COLUMN dead_lettered_at timestamptz,
    ADD COLUMN slot_at          timestamptz;
ALTER TABLE mfo_deliveries DROP CONSTRAINT mfo_deliveries_event_id_subscription_id_key;
CREATE UNIQUE INDEX mfo_deliveries_event_subscription_replay
    ON mfo_deliveries (event_id, subscription_id, replay);
CREATE INDEX mfo_deliveries_pending_due
    ON mfo_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX mfo_deliveries_pending_subscription
    ON mfo_deliveries (subscription_id) WHERE status = 'pending';

ALTER TABLE mfo_pipeline_runs ADD COLUMN job_key text;

-- The earliest time the next rate-limited send of a subscription may start.
CREATE TABLE mfo_subscription_pacing (
    subscription_id text PRIMARY KEY REFERENCES mfo_subscriptions (id),
    next_send_at    timestamptz NOT NULL
);
