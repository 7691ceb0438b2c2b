//! Error types shared across the crate.
//!
//! Each operation has its own error type next to it (envelope, session,
//! engines, store); this module re-exports them and names the culprit type.

pub use crate::ecdsa::EngineError as Error;

/// Index of a party blamed for a failure.
pub type Culprit = u16;
