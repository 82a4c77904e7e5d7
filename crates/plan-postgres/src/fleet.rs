//! Leases: how a fleet of workers shares the runs of one store. The database is the
//! coordinator: a worker claims a run with `FOR UPDATE SKIP LOCKED`, holds it under a lease
//! it renews, and writes to it only while the lease is its own ([`PostgresStore::fenced`]).
//! A worker that dies loses its lease when it expires, and another worker claims the run
//! and continues it from its journal.

use std::sync::Arc;
use std::time::Duration;

use plan_core::{RunId, RunStatus};
use plan_exec::error::StoreError;

use crate::follow::{Listener, Routed};
use crate::store::PostgresStore;

/// The channel a run becoming claimable is announced on (the run id as the payload).
pub const WORK_CHANNEL: &str = "plan_work";

/// A worker's claim on a run. `token` grows with every claim of the run, so a lease that
/// was taken over no longer matches.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The run.
    pub run: RunId,
    /// The worker holding it.
    pub worker: String,
    /// Which claim of the run this is.
    pub token: i64,
}

/// A claimed run: the lease, and the status the run had (`queued` for a new run,
/// `running` for one taken over from a worker that stopped renewing).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claim {
    /// The lease now held.
    pub lease: Lease,
    /// The run's status when it was claimed.
    pub status: RunStatus,
    /// Whether someone asked for the run to be cancelled
    /// ([`PostgresStore::request_cancel`]): the claimer should end it as cancelled.
    pub cancel_requested: bool,
}

/// Who holds a run's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseHolder {
    /// The worker's name.
    pub worker: String,
    /// Whether the lease is still live (not expired).
    pub live: bool,
}

/// Wakes a worker when work may have appeared (`NOTIFY plan_work`).
pub struct WorkListener {
    listener: Listener,
}

impl WorkListener {
    /// Waits until a run is announced claimable, or `at_most` passes.
    pub async fn wait(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.listener.wake.notified()).await;
    }
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// This store with every write to `lease.run` fenced by the lease: each write checks,
    /// in its own transaction, that the lease is still held by the same worker and claim,
    /// and is refused otherwise. A worker gives its run session this store, so a worker
    /// that was paused or cut off past its lease can never overwrite the work of the
    /// worker that took the run over.
    pub fn fenced(&self, lease: Lease) -> PostgresStore {
        let mut store = self.clone();
        store.fence = Some(Arc::new(crate::driving::Fences::of(lease)));
        store
    }

    /// Claims the oldest claimable run for `worker` under a lease of `ttl`: a queued run,
    /// or one whose lease expired. Runs in `skip` (those this worker cannot serve) are
    /// passed over. Concurrent claims never get the same run.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn claim(
        &self,
        worker: &str,
        ttl: Duration,
        skip: &[RunId],
    ) -> Result<Option<Claim>, StoreError> {
        self.retrying("cannot claim a run", move |_| async move {
            let what = "cannot claim a run";
            let mut client = self.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(|e| self.inner.errors.store(what, &e))?;
            let mut skip: Vec<String> = skip.iter().map(|r| r.as_str().to_owned()).collect();
            let row = loop {
                let Some(row) = tx
                    .query_opt(
                        "SELECT r.id, r.status FROM plan.runs r
                         LEFT JOIN plan.leases l ON l.run = r.id
                         WHERE ((r.status = 'queued' AND l.run IS NULL)
                                OR (r.status IN ('queued', 'running') AND l.expires < now()))
                           AND NOT (r.id = ANY($1))
                         ORDER BY r.created, r.id
                         LIMIT 1
                         FOR UPDATE OF r SKIP LOCKED",
                        &[&skip],
                    )
                    .await
                    .map_err(|e| self.inner.errors.store(what, &e))?
                else {
                    return Ok(None);
                };
                // The row lock may have been taken just after another claimer committed its
                // lease on this run: the SELECT above read the leases as they were when it
                // started. A new statement sees the committed lease; such a run is taken.
                let run: String = row.get(0);
                let taken = tx
                    .query_opt(
                        "SELECT 1 FROM plan.leases WHERE run = $1 AND expires >= now()",
                        &[&run],
                    )
                    .await
                    .map_err(|e| self.inner.errors.store(what, &e))?
                    .is_some();
                if !taken {
                    break row;
                }
                skip.push(run);
            };
            let run: String = row.get(0);
            let status: String = row.get(1);
            let token = tx
                .query_one(
                    "INSERT INTO plan.leases (run, worker, token, expires)
                     VALUES ($1, $2, 1, now() + $3::bigint * interval '1 millisecond')
                     ON CONFLICT (run) DO UPDATE SET worker = EXCLUDED.worker,
                         token = plan.leases.token + 1, expires = EXCLUDED.expires
                     RETURNING token, cancel",
                    &[&run, &worker, &millis(ttl)],
                )
                .await
                .map_err(|e| self.inner.errors.store(what, &e))?;
            let (token, cancel_requested): (i64, bool) = (token.get(0), token.get(1));
            tx.commit()
                .await
                .map_err(|e| self.inner.errors.store(what, &e))?;
            Ok(Some(Claim {
                lease: Lease {
                    run: RunId::new(run),
                    worker: worker.to_owned(),
                    token,
                },
                status: RunStatus::parse(&status).unwrap_or(RunStatus::Queued),
                cancel_requested,
            }))
        })
        .await
    }

    /// Extends a lease by `ttl` from now; `false` when it is no longer held (it expired
    /// and another worker claimed the run).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.renew_lease(lease, ttl).await? != crate::driving::Renewal::Lost)
    }

    /// Gives a lease up. A run that has not ended becomes claimable at once, and the
    /// workers are woken. The claim ends for good (its token is spent): unlike a lease
    /// that merely expired, it is not taken back by a late write or renewal.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.retrying("cannot release a lease", move |_| async move {
            let client = self.client().await?;
            let n = client
                .execute(
                    "UPDATE plan.leases SET expires = now() - interval '1 millisecond',
                                            token = token + 1
                     WHERE run = $1 AND worker = $2 AND token = $3",
                    &[&lease.run.as_str(), &lease.worker, &lease.token],
                )
                .await
                .map_err(|e| self.inner.errors.store("cannot release a lease", &e))?;
            if n == 1 {
                client
                    .execute(
                        "SELECT pg_notify($1, $2)",
                        &[&WORK_CHANNEL, &lease.run.as_str()],
                    )
                    .await
                    .map_err(|e| self.inner.errors.store("cannot release a lease", &e))?;
            }
            Ok(())
        })
        .await
    }

    /// Removes a lease, leaving the run to no worker: for a run that stopped to wait for
    /// approval, which is then answered like any waiting run (`plan approve` runs it in
    /// the approving process) and must not be taken over meanwhile.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn forget(&self, lease: &Lease) -> Result<(), StoreError> {
        self.retrying("cannot remove a lease", move |_| async move {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM plan.leases WHERE run = $1 AND worker = $2 AND token = $3",
                    &[&lease.run.as_str(), &lease.worker, &lease.token],
                )
                .await
                .map_err(|e| self.inner.errors.store("cannot remove a lease", &e))?;
            Ok(())
        })
        .await
    }

    /// Who holds the run's lease, if anyone ever claimed it.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn lease_holder(&self, run: &RunId) -> Result<Option<LeaseHolder>, StoreError> {
        self.retrying("cannot read a lease", move |_| async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT worker, expires > now() FROM plan.leases WHERE run = $1",
                    &[&run.as_str()],
                )
                .await
                .map_err(|e| self.inner.errors.store("cannot read a lease", &e))?;
            Ok(row.map(|r| LeaseHolder {
                worker: r.get(0),
                live: r.get(1),
            }))
        })
        .await
    }

    /// A connection listening for claimable work ([`WORK_CHANNEL`]).
    ///
    /// # Errors
    /// [`StoreError`] when the connection cannot be opened.
    pub async fn work_listener(&self) -> Result<WorkListener, StoreError> {
        Ok(WorkListener {
            listener: self
                .listen_on(WORK_CHANNEL, None, "listen for work")
                .await?,
        })
    }
}

/// The channel finished step tasks are announced on: the payload holds their keys,
/// `RUN STEP_KEY`, one a line (one notification for a batch of results).
pub const STEP_DONE_CHANNEL: &str = "plan_step_done";

/// A step attempt queued for the fleet: which run, step and attempt, and what the
/// executing worker needs (`task`: the goal, the step and its dependencies' outputs, as
/// the driving worker wrote them).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StepTask {
    /// The run.
    pub run: RunId,
    /// The step's id.
    pub step: String,
    /// The attempt number.
    pub attempt: i32,
    /// What to run, as JSON.
    pub task: serde_json::Value,
}

impl StepTask {
    /// A task for `attempt` of `step` (a key unique within the run) of `run`.
    pub fn new(run: RunId, step: impl Into<String>, attempt: i32, task: serde_json::Value) -> Self {
        Self {
            run,
            step: step.into(),
            attempt,
            task,
        }
    }
}

/// A claimed step task and the lease on it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StepClaim {
    /// The task.
    pub task: StepTask,
    /// The worker holding it.
    pub worker: String,
    /// Which claim of the task this is.
    pub token: i64,
}

/// The last claim of a step task ([`PostgresStore::step_task_claims`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskClaimed {
    /// The task's step key.
    pub step: String,
    /// The worker of its last claim; `None` when nobody claimed it.
    pub worker: Option<String>,
    /// Which claim of the task that is (1 for the first).
    pub token: i64,
    /// Whether it was claimed in the statement that queued it: its run's driver ran it
    /// ([`PostgresStore::enqueue_claimed_steps`]).
    pub when_queued: bool,
}

/// Claims as the arrays of a statement over several of them.
struct ClaimKeys {
    runs: Vec<String>,
    steps: Vec<String>,
    attempts: Vec<i32>,
    workers: Vec<String>,
    tokens: Vec<i64>,
}

impl ClaimKeys {
    fn of(claims: &[StepClaim]) -> Self {
        Self {
            runs: claims
                .iter()
                .map(|c| c.task.run.as_str().to_owned())
                .collect(),
            steps: claims.iter().map(|c| c.task.step.clone()).collect(),
            attempts: claims.iter().map(|c| c.task.attempt).collect(),
            workers: claims.iter().map(|c| c.worker.clone()).collect(),
            tokens: claims.iter().map(|c| c.token).collect(),
        }
    }

    /// The 1-based positions a statement returned, as a flag for each claim.
    fn flags(&self, positions: Vec<i64>) -> Vec<bool> {
        flags_at(self.runs.len(), positions)
    }
}

/// Step tasks as the arrays of a statement that queues them.
struct TaskKeys<'a> {
    runs: Vec<&'a str>,
    steps: Vec<&'a str>,
    attempts: Vec<i32>,
    bodies: Vec<String>,
}

impl<'a> TaskKeys<'a> {
    fn of(tasks: &'a [StepTask]) -> Self {
        Self {
            runs: tasks.iter().map(|t| t.run.as_str()).collect(),
            steps: tasks.iter().map(|t| t.step.as_str()).collect(),
            attempts: tasks.iter().map(|t| t.attempt).collect(),
            bodies: tasks.iter().map(|t| t.task.to_string()).collect(),
        }
    }
}

/// The 1-based `positions` a statement returned over `n` rows of arrays, as a flag for
/// each row.
fn flags_at(n: usize, positions: Vec<i64>) -> Vec<bool> {
    let mut flags = vec![false; n];
    for i in positions {
        if let Some(slot) = usize::try_from(i - 1).ok().and_then(|i| flags.get_mut(i)) {
            *slot = true;
        }
    }
    flags
}

/// The payload announcing a finished task of `step` (its key) in `run`.
fn done_key(run: &RunId, step: &str) -> String {
    format!("{run} {step}")
}

/// Wakes the waiters for step results (`NOTIFY plan_step_done`), each only for its own
/// step, so that a thousand steps in flight do not all look when one finishes.
pub struct StepListener {
    _listener: Listener,
    routed: Routed,
}

impl StepListener {
    /// Waits until a result of `step` (its task key) in `run` is announced, or `at_most`
    /// passes.
    pub async fn wait(&self, run: &RunId, step: &str, at_most: Duration) {
        self.routed.wait(done_key(run, step), at_most).await;
    }

    /// Watches for the results of `step` (its task key) in `run` from now on: start
    /// watching before queueing the task, so that a result recorded before the waiting
    /// begins is not missed.
    pub fn watch(&self, run: &RunId, step: &str) -> StepWatch {
        StepWatch(self.routed.watch(done_key(run, step)))
    }
}

/// Announcements of one step's results ([`StepListener::watch`]).
pub struct StepWatch(crate::follow::Watch);

impl StepWatch {
    /// Waits until a result is announced (or was, since the watch began, and not yet
    /// waited for), or `at_most` passes.
    pub async fn wait(&self, at_most: Duration) {
        self.0.wait(at_most).await;
    }
}

/// The longest payload one `NOTIFY` on [`STEP_DONE_CHANNEL`] carries (PostgreSQL takes
/// fewer than 8,000 bytes): a batch of results whose keys are longer is recorded in
/// several statements.
const DONE_PAYLOAD: usize = 7_000;

/// The channel new step tasks are announced on (the payload is empty): workers with room
/// claim them at once.
pub const STEPS_CHANNEL: &str = "plan_steps";

/// Wakes a worker when step tasks were queued (`NOTIFY plan_steps`).
pub struct StepsListener {
    listener: Listener,
}

impl StepsListener {
    /// Waits until step tasks are announced, or `at_most` passes.
    pub async fn wait(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.listener.wake.notified()).await;
    }
}

impl PostgresStore {
    /// Queues a step attempt for any worker and wakes the workers; nothing happens if it
    /// is queued already.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn enqueue_step(&self, task: &StepTask) -> Result<(), StoreError> {
        self.enqueue_steps(std::slice::from_ref(task)).await?;
        Ok(())
    }

    /// Queues step attempts for any worker in one statement, which wakes the workers
    /// once ([`STEPS_CHANNEL`]); says for each whether it was queued now (`false`: it
    /// was queued already, and may have a result). Retried through an outage (a task
    /// queued by a try whose answer was lost then reads as queued already).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn enqueue_steps(&self, tasks: &[StepTask]) -> Result<Vec<bool>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let keys = TaskKeys::of(tasks);
        let (runs, steps, attempts, bodies) =
            (&keys.runs, &keys.steps, &keys.attempts, &keys.bodies);
        self.retrying("cannot queue steps", move |_| async move {
            let what = match tasks {
                [one] => format!("cannot queue step `{}` of run `{}`", one.step, one.run),
                _ => format!("cannot queue {} steps", tasks.len()),
            };
            let client = self.client().await?;
            let row = crate::cached::query_one(
                &client,
                &format!(
                    "WITH queued AS (
                             INSERT INTO plan.step_tasks (run, step, attempt, task)
                             SELECT t.run, t.step, t.attempt, t.task::json
                             FROM unnest($1::text[], $2::text[], $3::int[], $4::text[])
                                  AS t(run, step, attempt, task)
                             ON CONFLICT (run, step, attempt) DO NOTHING
                             RETURNING run, step, attempt)
                         SELECT coalesce((SELECT array_agg(i) FROM queued q
                                          JOIN unnest($1::text[], $2::text[], $3::int[])
                                               WITH ORDINALITY AS k(run, step, attempt, i)
                                            ON k.run = q.run AND k.step = q.step
                                           AND k.attempt = q.attempt), '{{}}'::bigint[]),
                                (SELECT pg_notify('{STEPS_CHANNEL}', '')
                                 WHERE EXISTS (SELECT 1 FROM queued))::text"
                ),
                &[runs, steps, attempts, bodies],
            )
            .await
            .map_err(|e| self.inner.errors.store(&what, &e))?;
            Ok(flags_at(tasks.len(), row.get(0)))
        })
        .await
    }

    /// Queues step attempts already claimed by `worker` under leases of `ttl`, in one
    /// statement: the tasks of a run whose driver has room to run them itself. They are
    /// claimed tasks like any other (their leases renewed, their results recorded under
    /// them, taken over by another worker when a lease expires), but nobody is woken.
    /// Says for each the claim, or `None` when it was queued already (it may have a
    /// result). Retried through an outage (a task queued by a try whose answer was lost
    /// then reads as queued already, and is left to expire and be claimed again).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn enqueue_claimed_steps(
        &self,
        worker: &str,
        ttl: Duration,
        tasks: &[StepTask],
    ) -> Result<Vec<Option<StepClaim>>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let keys = TaskKeys::of(tasks);
        let (runs, steps, attempts, bodies) =
            (&keys.runs, &keys.steps, &keys.attempts, &keys.bodies);
        let what = "cannot queue steps";
        self.retrying(what, move |_| async move {
            let client = self.client().await?;
            let row = crate::cached::query_one(
                &client,
                "WITH queued AS (
                     INSERT INTO plan.step_tasks (run, step, attempt, task, state, worker,
                                                  token, expires, created, claimed)
                     SELECT t.run, t.step, t.attempt, t.task::json, 'claimed', $5, 1,
                            now() + $6::bigint * interval '1 millisecond', c.now, c.now
                     FROM (SELECT clock_timestamp() AS now) c,
                          unnest($1::text[], $2::text[], $3::int[], $4::text[])
                          AS t(run, step, attempt, task)
                     ON CONFLICT (run, step, attempt) DO NOTHING
                     RETURNING run, step, attempt)
                 SELECT coalesce(array_agg(k.i), '{}'::bigint[])
                 FROM queued q
                 JOIN unnest($1::text[], $2::text[], $3::int[])
                      WITH ORDINALITY AS k(run, step, attempt, i)
                   ON k.run = q.run AND k.step = q.step AND k.attempt = q.attempt",
                &[runs, steps, attempts, bodies, &worker, &millis(ttl)],
            )
            .await
            .map_err(|e| self.inner.errors.store(what, &e))?;
            let queued = flags_at(tasks.len(), row.get(0));
            Ok(tasks
                .iter()
                .zip(queued)
                .map(|(task, queued)| {
                    queued.then(|| StepClaim {
                        task: task.clone(),
                        worker: worker.to_owned(),
                        token: 1,
                    })
                })
                .collect())
        })
        .await
    }

    /// Claims the next step task for `worker` under a lease of `ttl`; see
    /// [`claim_steps`](Self::claim_steps).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn claim_step(
        &self,
        worker: &str,
        ttl: Duration,
        skip: &[RunId],
    ) -> Result<Option<StepClaim>, StoreError> {
        Ok(self
            .claim_steps(worker, ttl, skip, 1)
            .await?
            .into_iter()
            .next())
    }

    /// Claims up to `n` step tasks for `worker` under leases of `ttl`, in one statement:
    /// queued tasks, or ones whose lease expired, from the runs with the fewest tasks in
    /// hand first (so one large run does not starve the others), oldest first. Tasks of
    /// runs in `skip`, of runs that ended, and of steps already committed or finished by
    /// another attempt (the task's step key is `ID@DIGEST`) are passed over. Concurrent
    /// claims never get the same task.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn claim_steps(
        &self,
        worker: &str,
        ttl: Duration,
        skip: &[RunId],
        n: usize,
    ) -> Result<Vec<StepClaim>, StoreError> {
        let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
        self.retrying("cannot claim a step", move |_| async move {
            let what = "cannot claim a step";
            let skip: Vec<&str> = skip.iter().map(RunId::as_str).collect();
            let client = self.client().await?;
            let rows = crate::cached::query(
                &client,
                "WITH inflight AS (
                         SELECT run, count(*) AS n FROM plan.step_tasks
                         WHERE state = 'claimed' AND expires > now()
                         GROUP BY run),
                     next AS (
                         SELECT t.run, t.step, t.attempt FROM plan.step_tasks t
                         JOIN plan.runs r ON r.id = t.run AND r.status IN ('queued', 'running')
                         LEFT JOIN inflight i ON i.run = t.run
                         -- a step whose output is committed, or that another attempt
                         -- finished, is never run again: looked up by key for each
                         -- candidate (a lateral probe), so a claim costs what is queued,
                         -- not what the run has finished
                         LEFT JOIN LATERAL (SELECT 1 AS hit FROM plan.outputs o
                                            WHERE o.run = t.run
                                              AND o.step = split_part(t.step, '@', 1)
                                            LIMIT 1) committed ON true
                         LEFT JOIN LATERAL (SELECT 1 AS hit FROM plan.step_tasks d
                                            WHERE d.run = t.run AND d.step = t.step
                                              AND d.state = 'done'
                                              AND (d.result->>'ok') IS NOT NULL
                                            LIMIT 1) finished ON true
                         WHERE t.state <> 'done'
                           AND (t.state = 'ready' OR t.expires < now())
                           AND NOT (t.run = ANY($1))
                           AND committed.hit IS NULL AND finished.hit IS NULL
                         ORDER BY coalesce(i.n, 0), t.created
                         LIMIT $4
                         FOR UPDATE OF t SKIP LOCKED)
                     UPDATE plan.step_tasks t
                     SET state = 'claimed', worker = $2, token = t.token + 1,
                         expires = now() + $3::bigint * interval '1 millisecond',
                         claimed = clock_timestamp()
                     FROM next
                     WHERE t.run = next.run AND t.step = next.step AND t.attempt = next.attempt
                     RETURNING t.run, t.step, t.attempt, t.task::text, t.token",
                &[&skip, &worker, &millis(ttl), &n],
            )
            .await
            .map_err(|e| self.inner.errors.store(what, &e))?;
            rows.iter()
                .map(|row| {
                    let task: String = row.get(3);
                    Ok(StepClaim {
                        task: StepTask {
                            run: RunId::new(row.get::<_, String>(0)),
                            step: row.get(1),
                            attempt: row.get(2),
                            task: serde_json::from_str(&task).map_err(|e| {
                                StoreError::new(format!("{what}: a task is not JSON: {e}"))
                            })?,
                        },
                        worker: worker.to_owned(),
                        token: row.get(4),
                    })
                })
                .collect()
        })
        .await
    }

    /// Extends a step task's lease; `false` when it was lost (another worker claimed the
    /// task). See [`renew_steps`](Self::renew_steps).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn renew_step(&self, claim: &StepClaim, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.renew_steps(std::slice::from_ref(claim), ttl).await?[0])
    }

    /// Extends the leases of claimed step tasks by `ttl` from now, in one statement; says
    /// for each whether it is still held (`false`: another worker claimed the task). A
    /// lease that expired while nobody claimed the task (the database was unreachable)
    /// is taken back. One try: its callers renew again.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn renew_steps(
        &self,
        claims: &[StepClaim],
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let keys = ClaimKeys::of(claims);
        let client = self.client().await?;
        let row = crate::cached::query_one(
            &client,
            "WITH k AS (
                     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[],
                                          $5::bigint[])
                         WITH ORDINALITY AS k(run, step, attempt, worker, token, i)),
                 renewed AS (
                     UPDATE plan.step_tasks t
                     SET expires = now() + $6::bigint * interval '1 millisecond'
                     FROM k
                     WHERE t.run = k.run AND t.step = k.step AND t.attempt = k.attempt
                       AND t.worker = k.worker AND t.token = k.token AND t.state = 'claimed'
                     RETURNING k.i)
                 SELECT coalesce(array_agg(i), '{}'::bigint[]) FROM renewed",
            &[
                &keys.runs,
                &keys.steps,
                &keys.attempts,
                &keys.workers,
                &keys.tokens,
                &millis(ttl),
            ],
        )
        .await
        .map_err(|e| self.inner.errors.store("cannot renew a step lease", &e))?;
        Ok(keys.flags(row.get(0)))
    }

    /// Records a claimed task's result; see [`complete_steps`](Self::complete_steps).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn complete_step(
        &self,
        claim: &StepClaim,
        result: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        Ok(self
            .complete_steps(&[(claim.clone(), result.clone())])
            .await?[0])
    }

    /// Records the results of claimed tasks, each only while nobody else claimed it, in
    /// one statement per few dozen results, which also wakes their waiters
    /// ([`STEP_DONE_CHANNEL`]). Says for each whether it was recorded: `false` when its
    /// lease expired and another worker took the task over (the late result is refused
    /// and changes nothing). Retried through a database outage.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn complete_steps(
        &self,
        done: &[(StepClaim, serde_json::Value)],
    ) -> Result<Vec<bool>, StoreError> {
        let mut recorded = Vec::with_capacity(done.len());
        let mut start = 0;
        while start < done.len() {
            let mut end = start;
            let mut payload = 0;
            while end < done.len() {
                let t = &done[end].0.task;
                payload += done_key(&t.run, &t.step).len() + 1;
                if payload > DONE_PAYLOAD && end > start {
                    break;
                }
                end += 1;
            }
            recorded.extend(self.complete_batch(&done[start..end]).await?);
            start = end;
        }
        Ok(recorded)
    }

    async fn complete_batch(
        &self,
        done: &[(StepClaim, serde_json::Value)],
    ) -> Result<Vec<bool>, StoreError> {
        let claims: Vec<StepClaim> = done.iter().map(|(c, _)| c.clone()).collect();
        let keys = ClaimKeys::of(&claims);
        let bodies: Vec<String> = done.iter().map(|(_, r)| r.to_string()).collect();
        let (keys, bodies) = (&keys, &bodies);
        let what = match done {
            [(one, _)] => format!("cannot record the result of step `{}`", one.task.step),
            _ => format!("cannot record the results of {} steps", done.len()),
        };
        let what = &what;
        self.retrying(what, move |attempt| async move {
            let client = self.client().await?;
            let row = crate::cached::query_one(
                &client,
                    &format!(
                        "WITH k AS (
                             SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[],
                                                  $5::bigint[], $6::text[])
                                 WITH ORDINALITY AS k(run, step, attempt, worker, token, result, i)),
                         done AS (
                             UPDATE plan.step_tasks t
                             SET state = 'done', result = k.result::json,
                                 finished = clock_timestamp()
                             FROM k
                             WHERE t.run = k.run AND t.step = k.step AND t.attempt = k.attempt
                               AND t.worker = k.worker AND t.token = k.token
                               AND t.state = 'claimed'
                             RETURNING k.i, t.run || ' ' || t.step AS key)
                         SELECT coalesce((SELECT array_agg(i) FROM done), '{{}}'::bigint[]),
                                (SELECT pg_notify('{STEP_DONE_CHANNEL}', string_agg(key, E'\n'))
                                 FROM done HAVING count(*) > 0)::text"
                    ),
                    &[
                        &keys.runs,
                        &keys.steps,
                        &keys.attempts,
                        &keys.workers,
                        &keys.tokens,
                        bodies,
                    ],
                )
                .await
                .map_err(|e| self.inner.errors.store(what, &e))?;
            let mut recorded = keys.flags(row.get(0));
            if attempt.is_retry() && recorded.contains(&false) {
                // A retry whose first try committed (its answer lost with the
                // connection): those tasks are done under these very claims.
                let row = client
                    .query_one(
                        "SELECT coalesce(array_agg(k.i), '{}'::bigint[])
                         FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[])
                              WITH ORDINALITY AS k(run, step, attempt, worker, token, i)
                         JOIN plan.step_tasks t
                           ON t.run = k.run AND t.step = k.step AND t.attempt = k.attempt
                          AND t.worker = k.worker AND t.token = k.token AND t.state = 'done'",
                        &[
                            &keys.runs,
                            &keys.steps,
                            &keys.attempts,
                            &keys.workers,
                            &keys.tokens,
                        ],
                    )
                    .await
                    .map_err(|e| self.inner.errors.store(what, &e))?;
                let before = keys.flags(row.get(0));
                recorded = recorded.iter().zip(before).map(|(a, b)| *a || b).collect();
            }
            Ok(recorded)
        })
        .await
    }

    /// The result of a step attempt; see [`step_results`](Self::step_results).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn step_result(
        &self,
        run: &RunId,
        step: &str,
        attempt: i32,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .step_results(&[(run.clone(), step.to_owned(), attempt)])
            .await?
            .pop()
            .flatten())
    }

    /// The results of step attempts (run, step key, attempt), in one statement: each
    /// once a worker recorded it; failing that, a successful result of an earlier attempt
    /// of the same step (a step that finished is never run again, even when the worker
    /// driving the run died before recording it in the journal).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn step_results(
        &self,
        wanted: &[(RunId, String, i32)],
    ) -> Result<Vec<Option<serde_json::Value>>, StoreError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let runs: Vec<&str> = wanted.iter().map(|(r, _, _)| r.as_str()).collect();
        let steps: Vec<&str> = wanted.iter().map(|(_, s, _)| s.as_str()).collect();
        let attempts: Vec<i32> = wanted.iter().map(|(_, _, a)| *a).collect();
        let (runs, steps, attempts) = (&runs, &steps, &attempts);
        self.retrying("cannot read a step result", move |_| async move {
            let client = self.client().await?;
            let rows = crate::cached::query(
                &client,
                "SELECT DISTINCT ON (k.i) k.i, t.result::text
                     FROM unnest($1::text[], $2::text[], $3::int[])
                          WITH ORDINALITY AS k(run, step, attempt, i)
                     JOIN plan.step_tasks t
                       ON t.run = k.run AND t.step = k.step AND t.state = 'done'
                      AND (t.attempt = k.attempt OR (t.result->>'ok') IS NOT NULL)
                     ORDER BY k.i, (t.attempt = k.attempt) DESC,
                              (t.result->>'ok') IS NOT NULL DESC, t.attempt DESC",
                &[runs, steps, attempts],
            )
            .await
            .map_err(|e| self.inner.errors.store("cannot read a step result", &e))?;
            let mut results = vec![None; runs.len()];
            for row in rows {
                let i = usize::try_from(row.get::<_, i64>(0) - 1).unwrap_or(usize::MAX);
                let body: String = row.get(1);
                let value = serde_json::from_str(&body)
                    .map_err(|e| StoreError::new(format!("a step result is not JSON: {e}")))?;
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(value);
                }
            }
            Ok(results)
        })
        .await
    }

    /// Gives up a step attempt nobody needs any more (its run was cancelled), and wakes
    /// whoever waits for it (a driver that took the run over queues it again).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn drop_step(&self, run: &RunId, step: &str, attempt: i32) -> Result<(), StoreError> {
        self.retrying("cannot drop a step task", move |_| async move {
            let client = self.client().await?;
            client
                .execute(
                    &format!(
                        "WITH dropped AS (
                             DELETE FROM plan.step_tasks
                             WHERE run = $1 AND step = $2 AND attempt = $3 AND state <> 'done'
                             RETURNING run || ' ' || step AS key)
                         SELECT pg_notify('{STEP_DONE_CHANNEL}', key) FROM dropped"
                    ),
                    &[&run.as_str(), &step, &attempt],
                )
                .await
                .map_err(|e| self.inner.errors.store("cannot drop a step task", &e))?;
            Ok(())
        })
        .await
    }

    /// For a run's step tasks: how long each waited from being queued to being claimed
    /// (in the order they were queued), and the time from the first task queued to the last one finished (for benchmarks
    /// and operators).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn step_task_timings(
        &self,
        run: &RunId,
    ) -> Result<(Vec<Duration>, Duration), StoreError> {
        let what = "cannot read the step tasks";
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT extract(epoch FROM claimed - created)::float8 FROM plan.step_tasks
                 WHERE run = $1 AND claimed IS NOT NULL ORDER BY created",
                &[&run.as_str()],
            )
            .await
            .map_err(|e| self.inner.errors.store(what, &e))?;
        let waits = rows
            .iter()
            .map(|r| Duration::from_secs_f64(r.get::<_, f64>(0).max(0.0)))
            .collect();
        let span: Option<f64> = client
            .query_one(
                "SELECT extract(epoch FROM max(finished) - min(created))::float8
                 FROM plan.step_tasks WHERE run = $1",
                &[&run.as_str()],
            )
            .await
            .map_err(|e| self.inner.errors.store(what, &e))?
            .get(0);
        Ok((waits, Duration::from_secs_f64(span.unwrap_or(0.0).max(0.0))))
    }

    /// Who holds or held each step task of a run, in the order they were queued (for
    /// operators and tests).
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be reached.
    pub async fn step_task_claims(&self, run: &RunId) -> Result<Vec<TaskClaimed>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT step, worker, token, claimed = created FROM plan.step_tasks
                 WHERE run = $1 ORDER BY created, step, attempt",
                &[&run.as_str()],
            )
            .await
            .map_err(|e| self.inner.errors.store("cannot read the step tasks", &e))?;
        Ok(rows
            .iter()
            .map(|r| TaskClaimed {
                step: r.get(0),
                worker: r.get(1),
                token: r.get(2),
                when_queued: r.get::<_, Option<bool>>(3).unwrap_or(false),
            })
            .collect())
    }

    /// A connection listening for new step tasks ([`STEPS_CHANNEL`]).
    ///
    /// # Errors
    /// [`StoreError`] when the connection cannot be opened.
    pub async fn steps_listener(&self) -> Result<StepsListener, StoreError> {
        Ok(StepsListener {
            listener: self
                .listen_on(STEPS_CHANNEL, None, "listen for step tasks")
                .await?,
        })
    }

    /// A connection listening for step results ([`STEP_DONE_CHANNEL`]).
    ///
    /// # Errors
    /// [`StoreError`] when the connection cannot be opened.
    pub async fn step_listener(&self) -> Result<StepListener, StoreError> {
        let routed = Routed::default();
        let on = routed.clone();
        let listener = self
            .listen_with(
                STEP_DONE_CHANNEL,
                "listen for step results",
                move |payload| on.wake(payload),
            )
            .await?;
        Ok(StepListener {
            _listener: listener,
            routed,
        })
    }
}
