//! Review sentiment: the `text-lstm-attn` reference network, a GRU and a Transformer preset,
//! with a Hugging Face tokenizer trained on the training split, on the shared core.
//!
//! - [`tokenizer`]: WordPiece/BPE training, `tokenizer.json`, token ids.
//! - [`model`]: the networks and their config section.
//! - [`training`]: config → data → tokenizer → training → run directory.
//! - [`inference`]: evaluation, prediction with attention, and export of a trained run.
//! - [`bench`]: training and inference throughput.

pub mod bench;
pub mod inference;
pub mod model;
pub mod tokenizer;
pub mod training;

#[cfg(test)]
mod tests;
