//! Product-image classification: the `fashion-cnn` reference network and `resnet-small`,
//! trained on the shared core.
//!
//! - [`config`]: the `[model]` section and the family's config type.
//! - [`data`]: the configured image splits and their batches.
//! - [`model`]: the networks.
//! - [`training`]: this family's part of the shared training recipe.
//! - [`inference`]: evaluation, prediction and export of a trained run.
//! - [`bench`]: training and inference throughput.
//! - [`family`]: the family as the `vitrine` binary sees it.

pub mod backbones;
pub mod bench;
pub mod config;
pub mod data;
pub mod family;
pub mod inference;
pub mod model;
pub mod training;

pub use family::ImageFamily;

#[cfg(test)]
mod tests;
