//! Integration tests of the `plan` binary: every command and flag of the CLI contract.

mod support;

mod approve;
mod graph;
mod local;
mod readme;
mod help;
mod output;
mod run;
mod sandbox;
mod store;
