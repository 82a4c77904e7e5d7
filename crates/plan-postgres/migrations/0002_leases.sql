-- Version 2: leases, for a fleet of workers sharing the store.
--
-- A worker that claims a run holds its lease until `expires`, renewing it while it works.
-- `token` grows with every claim of the run, so a worker whose lease was taken over can
-- tell (and its writes are refused: they check worker and token in the same
-- transaction). Queued runs and runs whose lease expired are claimable.

CREATE TABLE plan.leases (
    run         text PRIMARY KEY REFERENCES plan.runs (id) ON DELETE CASCADE,
    worker      text NOT NULL,
    token       bigint NOT NULL,
    expires     timestamptz NOT NULL
);
CREATE INDEX leases_by_expiry ON plan.leases (expires);

-- A run becoming queued wakes the workers (NOTIFY plan_work with the run id).
CREATE FUNCTION plan.notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('plan_work', NEW.id);
    RETURN NEW;
END
$$;
CREATE TRIGGER runs_queued AFTER INSERT OR UPDATE OF status ON plan.runs
    FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION plan.notify_work();

-- Steps of fleet runs, queued by the worker driving the run and claimed by any worker:
-- one row per step attempt. A claimed task is leased like a run (worker, token,
-- expires); only the holder of a live lease can record its result.
CREATE TABLE plan.step_tasks (
    run         text NOT NULL REFERENCES plan.runs (id) ON DELETE CASCADE,
    step        text NOT NULL,
    attempt     integer NOT NULL,
    task        json NOT NULL,
    state       text NOT NULL DEFAULT 'ready',
    worker      text,
    token       bigint NOT NULL DEFAULT 0,
    expires     timestamptz,
    result      json,
    created     timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed     timestamptz,
    finished    timestamptz,
    PRIMARY KEY (run, step, attempt)
);
CREATE INDEX step_tasks_open ON plan.step_tasks (created) WHERE state <> 'done';
