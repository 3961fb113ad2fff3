//! Policies: budgets, rate limits, loop guards, model access.
