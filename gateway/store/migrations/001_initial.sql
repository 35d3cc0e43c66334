-- Received provider requests. The body is kept as received, byte for byte.
CREATE TABLE mfo_requests (
    id              text PRIMARY KEY,
    provider        text NOT NULL,
    route           text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    method          text NOT NULL,
    path            text NOT NULL,
    headers         jsonb NOT NULL,
    body            bytea NOT NULL,
    remote_addr     text,
    idempotency_key text
);
CREATE UNIQUE INDEX mfo_requests_idempotency
    ON mfo_requests (provider, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX mfo_requests_received ON mfo_requests (received_at);

-- Internal events, from a provider request or emitted by a pipeline step.
CREATE TABLE mfo_events (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    request_id  text REFERENCES mfo_requests (id),
    provider    text,
    route       text,
    run_id      text,
    source_key  text UNIQUE
);
CREATE INDEX mfo_events_request ON mfo_events (request_id);
CREATE INDEX mfo_events_type_created ON mfo_events (type, created_at);

CREATE TABLE mfo_pipeline_runs (
    id          text PRIMARY KEY,
    pipeline    text NOT NULL,
    event_id    text NOT NULL REFERENCES mfo_events (id),
    status      text NOT NULL DEFAULT 'queued',
    steps       jsonb NOT NULL DEFAULT '[]',
    error       text,
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    UNIQUE (event_id, pipeline)
);
CREATE INDEX mfo_pipeline_runs_status ON mfo_pipeline_runs (status, created_at);

CREATE TABLE mfo_subscriptions (
    id              text PRIMARY KEY,
    name            text UNIQUE,
    source          text NOT NULL,
    url             text NOT NULL,
    events          text[] NOT NULL,
    secret          text NOT NULL,
    filter          text,
    template        jsonb,
    headers         jsonb NOT NULL DEFAULT '{}',
    timeout         double precision NOT NULL,
    retry           jsonb NOT NULL,
    description     text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'active',
    status_reason   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);

-- One delivery per event and subscription; its id is the webhook-id header.
CREATE TABLE mfo_deliveries (
    id              text PRIMARY KEY,
    event_id        text NOT NULL REFERENCES mfo_events (id),
    subscription_id text NOT NULL REFERENCES mfo_subscriptions (id),
    event_type      text NOT NULL,
    status          text NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (event_id, subscription_id)
);
CREATE INDEX mfo_deliveries_status ON mfo_deliveries (status, next_attempt_at);
CREATE INDEX mfo_deliveries_subscription ON mfo_deliveries (subscription_id, created_at);
CREATE INDEX mfo_deliveries_created ON mfo_deliveries (created_at);

CREATE TABLE mfo_attempts (
    id               bigserial PRIMARY KEY,
    delivery_id      text NOT NULL REFERENCES mfo_deliveries (id),
    number           integer NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_ms      double precision NOT NULL,
    status_code      integer,
    response_headers jsonb,
    response_body    text,
    error            text,
    UNIQUE (delivery_id, number)
);
