//! Product-image classification: the `fashion-cnn` reference network and `resnet-small`,
//! trained on the shared core.
//!
//! - [`model`]: the networks and their config section.
//! - [`training`]: config → data → training → run directory.
//! - [`inference`]: evaluation, prediction and export of a trained run.
//! - [`bench`]: training and inference throughput.

pub mod bench;
pub mod inference;
pub mod model;
pub mod training;

#[cfg(test)]
mod tests;
