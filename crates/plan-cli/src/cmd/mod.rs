//! One module per command.

pub mod graph;
pub mod model;
pub mod run;
pub mod runs;
pub mod sandbox;
