//! Personalised recommendation: popularity and item-KNN baselines, BPR matrix factorisation,
//! NeuMF, a two-tower hybrid over IDs and features, and SASRec over behaviour sequences, with
//! RecBole's evaluation protocol and customer segmentation, on the shared core.
//!
//! - [`config`]: interactions and feature files, the split, the `[model]` and `[eval]` sections.
//! - [`data`]: reading interactions and features, ID maps, the seeded split, training batches.
//! - [`model`]: the recommenders.
//! - [`training`]: this family's part of the shared training recipe.
//! - [`ranking`] and [`metrics`]: full ranking in bounded memory, RecBole's metrics.
//! - [`inference`]: recommending, similar items, evaluation and export of a trained run.
//! - [`segment`]: K-means customer segments, silhouettes and a PCA scatter.
//! - [`bench`]: training and ranking throughput.
//! - [`family`]: the family and its commands as the `vitrine` binary sees them.

pub mod bench;
pub mod config;
pub mod data;
pub mod family;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod ranking;
pub mod segment;
pub mod training;

pub use family::RecommendFamily;

#[cfg(test)]
mod tests;
