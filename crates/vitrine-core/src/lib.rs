//! Vitrine's shared core: what every model family needs, written once.
//!
//! The data flows one way: [`config`] → [`data`] → model (in a family crate) → [`train`]
//! → [`run_dir`] → [`export`] / evaluation ([`metrics`], [`report`]). A family plugs in through
//! one trait, [`family::Family`]; libraries report through [`reporter::Reporter`], and only the
//! binary owns the terminal.

pub mod activation;
pub mod attention;
pub mod backend;
pub mod batch_norm;
pub mod bench;
pub mod classifier;
pub mod config;
pub mod cross_entropy;
pub mod data;
pub mod dropout;
pub mod export;
pub mod family;
pub mod history;
pub mod layer_norm;
pub mod metrics;
pub mod per_cpu;
pub mod plot;
pub mod report;
pub mod reporter;
pub mod run_dir;
pub mod train;
pub mod transformer;
