//! The `/v1` handlers.
