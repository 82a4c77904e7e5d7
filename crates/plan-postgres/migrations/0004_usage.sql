-- Version 4: a ledger of each run's model usage, shared by every process working on it.
--
-- Every model call of a run, whichever process makes it (the worker driving the run, the
-- workers running its steps), adds its tokens and cost here in one atomic statement
-- (`INSERT ... ON CONFLICT DO UPDATE ... RETURNING`), and budgets are checked against the
-- total. A run's row is created when a process first opens its ledger, seeded from the
-- `llm_call` events of its journal (so runs from before this version, and calls of
-- processes that do not charge the ledger, count), and raised to the journal's usage
-- whenever a ledger is opened again; it is never lowered.
CREATE TABLE plan.run_usage (
    run               text PRIMARY KEY REFERENCES plan.runs (id) ON DELETE CASCADE,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    usd               double precision NOT NULL DEFAULT 0,
    calls             bigint NOT NULL DEFAULT 0
);
