//! `cache:` (SPEC §9).
use super::*;

/// `cache.ttl_s` and `cache.max_mib` when `cache.enabled` sets neither (SPEC §9).
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
const DEFAULT_CACHE_MIB: u64 = 64;
const MAX_CACHE_TTL_S: u64 = 30 * 86_400;
const MAX_CACHE_MIB: u64 = 1024 * 1024;

impl Validator<'_> {
    /// `cache:`; `Some(None)` when it is written but not enabled.
    pub(super) fn cache(&mut self, item: &Spanned<RawCache>) -> Option<Option<CacheConfig>> {
        let raw = &item.value;
        let enabled = raw
            .enabled
            .as_ref()
            .map(|v| self.boolean(v, "cache.enabled"));
        let ttl = raw.ttl_s.as_ref().map(|v| {
            let secs = self.whole(v, "cache.ttl_s", 1)?;
            if secs > MAX_CACHE_TTL_S {
                self.error(
                    line_of(v),
                    format!(
                        "cache.ttl_s: `{secs}` is above the maximum of {MAX_CACHE_TTL_S} (30 days)"
                    ),
                );
                return None;
            }
            Some(Duration::from_secs(secs))
        });
        let max_mib = raw.max_mib.as_ref().map(|v| {
            let mib = self.whole(v, "cache.max_mib", 1)?;
            if mib > MAX_CACHE_MIB {
                self.error(
                    line_of(v),
                    format!(
                        "cache.max_mib: `{mib}` is above the maximum of {MAX_CACHE_MIB} (1 TiB)"
                    ),
                );
                return None;
            }
            Some(mib)
        });
        let (enabled, ttl, max_mib) = (present(enabled)?, present(ttl)?, present(max_mib)?);
        // Off unless asked for: a cache serves answers without the provider,
        // which a config must say it wants.
        if enabled != Some(true) {
            return Some(None);
        }
        Some(Some(CacheConfig {
            ttl: ttl.unwrap_or(DEFAULT_CACHE_TTL),
            max_bytes: max_mib.unwrap_or(DEFAULT_CACHE_MIB) * 1024 * 1024,
        }))
    }
}
