//! `lcr`: longest-prefix routing, least-cost carrier ordering and exact call rating.
//!
//! The core knows nothing of Python; the bindings live in [`python`] behind the `python`
//! feature, so `cargo test` needs no interpreter.

pub mod deck;
pub mod huge;
pub mod load;
pub mod money;
pub mod number;
pub mod probe;
pub mod quote;
pub mod rate;
pub mod route;
pub mod seed;
pub mod timefmt;
pub mod trie;

#[cfg(feature = "python")]
mod python;
