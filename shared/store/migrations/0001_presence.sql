-- The user directory: who exists, their display name and visibility class.
CREATE TABLE users (
    tenant      text        NOT NULL,
    user_id     text        NOT NULL,
    username    text,
    class       text        NOT NULL DEFAULT 'other',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, user_id)
);

-- The presence projection: each user's presence as of the change with sequence `seq` of the
-- event log. Written by the persister; a row is never overwritten by an older `seq`.
CREATE TABLE presence (
    tenant      text        NOT NULL,
    user_id     text        NOT NULL,
    class       text        NOT NULL,
    status      text        NOT NULL,
    online      boolean     NOT NULL,
    last_seen   timestamptz,
    details     jsonb,
    seq         bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, user_id)
);
CREATE INDEX presence_online ON presence (tenant, user_id) WHERE online;

-- How far a consumer has durably processed a stream, written in the same transaction as
-- what it wrote: restarts resume exactly there.
CREATE TABLE consumer_offsets (
    namespace   text        NOT NULL,
    consumer    text        NOT NULL,
    stream_seq  bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, consumer)
);

-- The aggregator's newest snapshot: its whole fold state (JSON, kept as text so numbers
-- come back bit for bit) as of event-log sequence `seq`.
CREATE TABLE aggregator_snapshots (
    namespace   text        PRIMARY KEY,
    seq         bigint      NOT NULL,
    state       text        NOT NULL,
    saved_at    timestamptz NOT NULL DEFAULT now()
);
