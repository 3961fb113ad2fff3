//! Virtual keys: format, hashing, lookup behind a cache.
