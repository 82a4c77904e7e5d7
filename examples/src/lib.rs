//! Examples of the plan framework's public API; see `examples/examples/`.
