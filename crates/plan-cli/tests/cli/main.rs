//! Integration tests of the `plan` binary: every command and flag of the CLI contract.

mod support;

mod approval_edits;
mod approve;
mod auto;
mod code_steps;
mod compat;
mod diff;
mod durable;
mod fleet;
mod forecast;
mod graph;
mod help;
mod interrupted;
mod live;
mod llama_cpp;
mod local;
mod matrix;
mod mcp;
mod otel;
mod outage;
mod output;
mod postgres;
mod prune;
mod readme;
mod replay;
mod research;
mod research_eval;
mod run;
mod run_settings;
mod sandbox;
mod security;
mod serve;
mod spec;
mod store;
mod timeline;
