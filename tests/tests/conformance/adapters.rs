//! The transports under test. A scenario is written once against [`Adapter`].

use tokenkit_core::ClientBuilder;

/// One transport adapter: its builder preset and what its runtime hooks offer.
pub(crate) trait Adapter: 'static {
    /// A client builder with this adapter's transport and runtime hooks.
    fn builder(base_url: &str) -> ClientBuilder;
    /// Whether the preset has a Spawn hook (background refreshes).
    const SPAWNS: bool;
}

pub(crate) struct Reqwest;
pub(crate) struct Hyper;
pub(crate) struct Isahc;

impl Adapter for Reqwest {
    fn builder(base_url: &str) -> ClientBuilder {
        tokenkit_reqwest::builder(base_url)
    }
    const SPAWNS: bool = true;
}

impl Adapter for Hyper {
    fn builder(base_url: &str) -> ClientBuilder {
        tokenkit_hyper::builder(base_url)
    }
    const SPAWNS: bool = true;
}

impl Adapter for Isahc {
    fn builder(base_url: &str) -> ClientBuilder {
        tokenkit_isahc::builder(base_url).unwrap()
    }
    const SPAWNS: bool = true;
}
