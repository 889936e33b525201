//! Creative generation: the `conv-ae` autoencoder (optionally variational) and the `dcgan`
//! GAN (optionally class-conditional), trained on the shared core.
//!
//! - [`config`]: the `[model]` and `[eval]` sections and the family's config type.
//! - [`data`]: the configured image splits in each model's pixel range.
//! - [`model`]: the networks.
//! - [`training`]: this family's part of the shared training recipe, with one task per model:
//!   [`autoencoder`] and [`gan`] (two networks, two optimizers), each a [`task::GeneratorTask`].
//! - [`scoring`]: samples scored by a classifier's features ([`frechet`]: the distance itself).
//! - [`inference`]: generate, reconstruct, interpolate, evaluate and export a trained run.
//! - [`grid`]: image grids as PNG.
//! - [`bench`]: training and generation throughput.
//! - [`family`]: the family and its commands as the `vitrine` binary sees them.

pub mod autoencoder;
pub mod bench;
pub mod config;
pub mod data;
pub mod family;
pub mod frechet;
pub mod gan;
pub mod grid;
pub mod inference;
pub mod model;
pub mod scoring;
pub mod task;
pub mod training;

pub use family::GenerationFamily;

#[cfg(test)]
mod tests;
