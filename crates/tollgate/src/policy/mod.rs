//! Policies: budgets, rate limits, loop guards, model access.
//! (Placeholder in the skeleton; the policy branch replaces this file.)

/// Placeholder; replaced by the policy branch.
pub struct PolicyEngine;
