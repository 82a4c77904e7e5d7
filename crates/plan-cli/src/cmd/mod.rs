//! One module per command.

pub mod diff;
pub mod fleet;
pub mod graph;
pub mod mcp;
pub mod model;
pub mod replay;
pub mod run;
pub mod runs;
pub mod sandbox;
pub mod serve;
pub mod tools;
