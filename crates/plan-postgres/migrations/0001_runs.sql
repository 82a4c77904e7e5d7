-- Version 1: runs, their plan revisions, their journals and their step outputs.
--
-- Times are timestamptz at millisecond precision. JSON columns keep the text as written
-- (json, not jsonb), so a run reads back exactly as it was recorded.
-- Fleet-ready: a run's status is a column with an index on the unfinished ones (queued
-- work is claimed from it with FOR UPDATE SKIP LOCKED), and every journal append
-- takes the run's row lock to number its events, so a row lock on a run orders
-- everything written to it.

CREATE TABLE plan.runs (
    id          text PRIMARY KEY,
    goal        text NOT NULL,
    created     timestamptz NOT NULL,
    updated     timestamptz NOT NULL,
    strategy    text,
    model       text,
    base_url    text,
    options     json NOT NULL,
    status      text NOT NULL,
    answer      text,
    failure     text,
    extras      json,
    -- the seq of the run's last event: events are numbered 1, 2, ... per run, no gaps
    last_seq    bigint NOT NULL DEFAULT 0
);
CREATE INDEX runs_newest_first ON plan.runs (created DESC, id DESC);
CREATE INDEX runs_unfinished ON plan.runs (status, created)
    WHERE status IN ('queued', 'running', 'awaiting_approval');

CREATE TABLE plan.plans (
    run         text NOT NULL REFERENCES plan.runs (id) ON DELETE CASCADE,
    revision    integer NOT NULL,
    plan        json NOT NULL,
    created     timestamptz NOT NULL,
    PRIMARY KEY (run, revision)
);

CREATE TABLE plan.events (
    run         text NOT NULL REFERENCES plan.runs (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    ts          timestamptz NOT NULL,
    event       text NOT NULL,
    body        json NOT NULL,
    PRIMARY KEY (run, seq)
);

-- One output per step and run: a completed step is never redone, and a second commit
-- fails on the primary key.
CREATE TABLE plan.outputs (
    run         text NOT NULL REFERENCES plan.runs (id) ON DELETE CASCADE,
    step        text NOT NULL,
    output      text NOT NULL,
    attempts    integer NOT NULL,
    fallback    boolean NOT NULL,
    revision    integer NOT NULL,
    duration_ms bigint NOT NULL,
    ts          timestamptz NOT NULL,
    committed   bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (run, step)
);
CREATE INDEX outputs_in_commit_order ON plan.outputs (run, committed);
