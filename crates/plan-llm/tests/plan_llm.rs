//! Integration tests for plan-llm, through the public API only.

mod suite;
