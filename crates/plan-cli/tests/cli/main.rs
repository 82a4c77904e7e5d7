//! Integration tests of the `plan` binary: every command and flag of the CLI contract.

mod support;

mod graph;
mod help;
mod output;
mod sandbox;
