-- Version 3: cancellation across processes.
--
-- Whoever does not hold a run (a server's API, another terminal) asks for it to be
-- cancelled by setting `cancel` on its lease; the holder sees it when it renews the lease
-- and cancels the run there, and a worker claiming a run whose cancellation was asked for
-- cancels it at once. A queued run nobody holds yet gets an expired lease with `cancel`
-- set, so the first worker to claim it ends it as cancelled.
ALTER TABLE plan.leases ADD COLUMN cancel boolean NOT NULL DEFAULT false;
