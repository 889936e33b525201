//! Review sentiment: `text-ngram` (the default), the `text-lstm-attn` reference network, a GRU and
//! a Transformer preset, with a Hugging Face tokenizer trained on the training split, and
//! `text-bert`, a pretrained encoder fine-tuned with its own tokenizer; every run set beside a
//! classical baseline fitted on its own split.
//!
//! - [`config`]: where labelled text comes from, the tokenizer settings, the `[model]` section.
//! - [`data`]: reading, deduplicating and splitting labelled text; token ids and their batches.
//! - [`tokenizer`]: WordPiece/BPE training, `tokenizer.json`, token ids.
//! - [`model`]: the models.
//! - [`baseline`]: TF-IDF + logistic regression, the linear baseline of every run.
//! - [`bert`]: a pretrained BERT-family encoder read from a `transformers` directory.
//! - [`training`]: this family's part of the shared training recipe.
//! - [`inference`]: evaluation, prediction with attention, and export of a trained run.
//! - [`bench`]: training and inference throughput.
//! - [`family`]: the family as the `vitrine` binary sees it.

pub mod baseline;
pub mod bench;
pub mod bert;
pub mod config;
pub mod data;
pub mod family;
pub mod inference;
pub mod model;
mod recurrence;
pub mod tokenizer;
pub mod training;

pub use family::TextFamily;

#[cfg(test)]
mod tests;
