//! Vitrine's shared core: what every model family needs, written once.
//!
//! The data flows one way: [`config`] → [`data`] → model (in a family crate) → [`train`]
//! → [`run_dir`] → [`export`] / evaluation ([`metrics`], [`report`]).

pub mod backend;
pub mod bench;
pub mod classifier;
pub mod config;
pub mod data;
pub mod export;
pub mod metrics;
pub mod plot;
pub mod progress;
pub mod report;
pub mod run_dir;
pub mod train;
