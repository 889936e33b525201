//! Creative generation: the `conv-ae` autoencoder (optionally variational) and the `dcgan`
//! GAN (optionally class-conditional), trained on the shared core.
//!
//! - [`model`]: the networks and their config section.
//! - [`training`]: config → data → the autoencoder or two-network GAN loop → run directory.
//! - [`inference`]: generate, reconstruct, interpolate, evaluate and export a trained run.
//! - [`frechet`]: the Fréchet distance between two sets of classifier features.
//! - [`grid`]: image grids as PNG.
//! - [`bench`]: training and generation throughput.

pub mod bench;
pub mod frechet;
pub mod grid;
pub mod inference;
pub mod model;
pub mod training;

#[cfg(test)]
mod tests;
