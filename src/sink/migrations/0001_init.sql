-- streamsink schema v1: the event log and the sessions projection.

CREATE TABLE events (
    id              text        PRIMARY KEY,
    type            text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    session_id      text,
    workspace_id    text,
    device_id       text,
    data            jsonb       NOT NULL DEFAULT '{}',
    attributes      jsonb       NOT NULL DEFAULT '{}',
    stream          text        NOT NULL,
    stream_entry_id text        NOT NULL,
    ingested_at     timestamptz NOT NULL DEFAULT now()
);

-- "events of type X in a time range", the most common read.
CREATE INDEX events_type_occurred_at_idx ON events (type, occurred_at);
-- "everything in session S, in order".
CREATE INDEX events_session_idx ON events (session_id, occurred_at) WHERE session_id IS NOT NULL;

-- One row per session, merged from session.start and session.end in whichever order they
-- arrive: the earliest start and the latest end win (ties broken by event id), so the row is
-- the same for every arrival order and every redelivery.
CREATE TABLE sessions (
    session_id     text        PRIMARY KEY,
    workspace_id   text,
    device_id      text,
    started_at     timestamptz,
    start_event_id text,
    ended_at       timestamptz,
    end_event_id   text,
    end_reason     text,
    duration_ms    bigint GENERATED ALWAYS AS
                       ((EXTRACT(EPOCH FROM (ended_at - started_at)) * 1000)::bigint) STORED,
    lifecycle      text   GENERATED ALWAYS AS
                       (CASE WHEN ended_at IS NULL THEN 'active' ELSE 'ended' END) STORED
);
