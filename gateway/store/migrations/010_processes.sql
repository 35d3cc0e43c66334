-- Running mfo processes and the config version each one serves.
CREATE TABLE mfo_processes (
    id                text PRIMARY KEY,
    kind              text NOT NULL,
    hostname          text NOT NULL,
    pid               integer NOT NULL,
    config_version    text NOT NULL,
    last_reload_error jsonb,
    started_at        timestamptz NOT NULL DEFAULT now(),
    heartbeat_at      timestamptz NOT NULL DEFAULT now()
);
