//! Search backends through the public API: the local index over the shared research corpus
//! (feature `local-index`) and the Brave adapter against a local server that replays the
//! documented wire format.

#[cfg(feature = "local-index")]
mod local;

mod brave;
