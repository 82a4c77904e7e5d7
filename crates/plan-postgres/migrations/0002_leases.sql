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
