//! The batched ledger writer. (Placeholder in the skeleton; the store branch replaces this file.)

/// Placeholder; replaced by the store branch.
#[derive(Clone)]
pub struct LedgerHandle;
