//! Switches that exist for the tests and the benchmark's baseline, never for an operator.
//!
//! Invariant: a production build (without the `test-hooks` Cargo feature) can only make
//! [`Hooks::default`], every switch off; the setters and [`Hooks::from_env`] exist only in a
//! `test-hooks` build (the test suite's and `scripts/bench.sh`'s).

/// Test and benchmark switches carried by a running pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks {
    /// One transaction and one acknowledgement per event: the naive design, kept only as the
    /// benchmark's baseline.
    pub(crate) per_event: bool,
    /// Reclaim with XPENDING + XCLAIM even where XAUTOCLAIM exists (it is chosen by itself
    /// on Redis < 6.2; forcing it lets the fallback be tested on a current server).
    pub(crate) force_claim_fallback: bool,
}

#[cfg(feature = "test-hooks")]
impl Hooks {
    /// Writes and acknowledges each event on its own (the benchmark's naive baseline).
    pub fn per_event(mut self) -> Hooks {
        self.per_event = true;
        self
    }

    /// Uses the Redis < 6.2 reclaim path on any server.
    pub fn force_claim_fallback(mut self) -> Hooks {
        self.force_claim_fallback = true;
        self
    }

    /// The hooks named in `STREAMSINK_TEST_HOOKS` (comma-separated: `per-event`,
    /// `claim-fallback`), so the benchmark can switch them on in the binary it runs.
    /// Unknown names are an error, so a typo cannot silently measure the wrong thing.
    pub fn from_env() -> Result<Hooks, UnknownHook> {
        let mut hooks = Hooks::default();
        let value = std::env::var("STREAMSINK_TEST_HOOKS").unwrap_or_default();
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            hooks = match name {
                "per-event" => hooks.per_event(),
                "claim-fallback" => hooks.force_claim_fallback(),
                other => return Err(UnknownHook(other.to_string())),
            };
        }
        Ok(hooks)
    }
}

/// A name in `STREAMSINK_TEST_HOOKS` that is no hook.
#[cfg(feature = "test-hooks")]
#[derive(Debug, thiserror::Error)]
#[error("unknown test hook '{0}' in STREAMSINK_TEST_HOOKS (known: per-event, claim-fallback)")]
pub struct UnknownHook(String);
