//! Tokenized text as batches of device tensors: padded to the longest text of each batch, with
//! a mask, grouped by length for training so little compute is spent on padding.

use std::sync::Arc;

use burn::prelude::*;
use rand::{rngs::StdRng, seq::SliceRandom};
use vitrine_core::classifier::LabelledBatch;
use vitrine_core::data::{BatchSource, epoch_rng, in_background};

use super::NgramDictionary;

/// Texts as token ids (already truncated), with their labels; tokenized once.
#[derive(Debug, Clone, Default)]
pub struct TokenizedSet {
    pub ids: Vec<Vec<u32>>,
    pub labels: Vec<u32>,
}

impl TokenizedSet {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Token ids `[batch, len]` and their mask `[batch, len]` (1 at real tokens, 0 at padding); with
/// an n-gram dictionary, the rows of the n-grams starting at each token `[batch, (order − 1)·len]`
/// (see [`NgramDictionary::batch_rows`]).
#[derive(Debug, Clone)]
pub struct TokenInput {
    pub ids: Tensor<2, Int>,
    pub mask: Tensor<2>,
    pub ngrams: Option<Tensor<2, Int>>,
}

/// A batch of token inputs and their labels `[batch]`.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    pub input: TokenInput,
    pub targets: Tensor<1, Int>,
}

impl TokenInput {
    /// Pads `texts` with `pad_id` to the longest of them (at least `min_len`), with their
    /// n-grams' rows when the model has a dictionary.
    pub fn from_ids(texts: &[&[u32]], ngrams: Option<&NgramDictionary>, pad_id: u32, min_len: usize, device: &Device) -> Self {
        let len = texts.iter().map(|t| t.len()).max().unwrap_or(0).max(min_len).max(1);
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        for text in texts {
            ids.extend(text.iter().map(|&t| t as i64));
            ids.extend(std::iter::repeat_n(pad_id as i64, len - text.len()));
            mask.extend(std::iter::repeat_n(1.0f32, text.len()));
            mask.extend(std::iter::repeat_n(0.0f32, len - text.len()));
        }
        let n = texts.len();
        let ngrams = ngrams.map(|dictionary| {
            let rows = dictionary.batch_rows(texts, len);
            let columns = rows.len() / n.max(1);
            Tensor::from_data(TensorData::new(rows, [n, columns]), device)
        });
        Self { ids: Tensor::from_data(TensorData::new(ids, [n, len]), device), mask: Tensor::from_data(TensorData::new(mask, [n, len]), device), ngrams }
    }
}

/// Texts per sorting pool: batches are cut from pools of similar length.
const POOL_BATCHES: usize = 50;

/// Batches of a [`TokenizedSet`]: shuffled and length-grouped for training, in order otherwise.
#[derive(Clone)]
pub struct TokenBatches {
    set: Arc<TokenizedSet>,
    ngrams: Option<Arc<NgramDictionary>>,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    pad_id: u32,
    device: Device,
}

impl TokenBatches {
    /// In-order batches (validation, test, prediction).
    pub fn ordered(set: Arc<TokenizedSet>, batch_size: usize, pad_id: u32, device: Device) -> Self {
        Self { set, ngrams: None, batch_size, shuffle_seed: None, pad_id, device }
    }

    /// Shuffled batches of texts of similar length (training): the set is shuffled, cut into
    /// pools of 50 batches, each pool sorted by length and cut into batches, and the batches
    /// shuffled again.
    pub fn shuffled(set: Arc<TokenizedSet>, batch_size: usize, seed: u64, pad_id: u32, device: Device) -> Self {
        Self { set, ngrams: None, batch_size, shuffle_seed: Some(seed), pad_id, device }
    }

    /// Batches that carry their n-grams' rows in `ngrams` (a model with an n-gram dictionary).
    pub fn with_ngrams(self, ngrams: Option<Arc<NgramDictionary>>) -> Self {
        Self { ngrams, ..self }
    }

    fn order(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.set.len()).collect();
        let Some(seed) = self.shuffle_seed else {
            return order.chunks(self.batch_size).map(<[usize]>::to_vec).collect();
        };
        let mut rng: StdRng = epoch_rng(seed, epoch);
        order.shuffle(&mut rng);
        let mut batches = Vec::new();
        for pool in order.chunks_mut(self.batch_size * POOL_BATCHES) {
            pool.sort_by_key(|&i| self.set.ids[i].len());
            batches.extend(pool.chunks(self.batch_size).map(<[usize]>::to_vec));
        }
        batches.shuffle(&mut rng);
        batches
    }

    fn build(&self, indices: &[usize]) -> TokenBatch {
        let texts: Vec<&[u32]> = indices.iter().map(|&i| self.set.ids[i].as_slice()).collect();
        let targets: Vec<i64> = indices.iter().map(|&i| self.set.labels[i] as i64).collect();
        TokenBatch {
            input: TokenInput::from_ids(&texts, self.ngrams.as_deref(), self.pad_id, 1, &self.device),
            targets: Tensor::from_data(TensorData::new(targets, [indices.len()]), &self.device),
        }
    }
}

impl BatchSource for TokenBatches {
    type Batch = TokenBatch;

    fn len(&self) -> usize {
        self.set.len()
    }

    fn num_batches(&self) -> usize {
        self.set.len().div_ceil(self.batch_size)
    }

    fn batches(&self, epoch: usize) -> Box<dyn Iterator<Item = TokenBatch> + '_> {
        let this = self.clone();
        in_background(move || this.order(epoch).into_iter().map(move |indices| this.build(&indices)))
    }
}

impl LabelledBatch for TokenBatch {
    type Input = TokenInput;
    fn into_parts(self) -> (TokenInput, Tensor<1, Int>) {
        (self.input, self.targets)
    }

    fn len(&self) -> usize {
        self.targets.dims()[0]
    }

    fn share(&self, range: std::ops::Range<usize>, device: &Device) -> Self {
        let rows = |ids: &Tensor<2, Int>| ids.clone().slice(range.clone()).to_device(device);
        let input = TokenInput {
            ids: rows(&self.input.ids),
            mask: self.input.mask.clone().slice(range.clone()).to_device(device),
            ngrams: self.input.ngrams.as_ref().map(rows),
        };
        Self { input, targets: self.targets.clone().slice(range).to_device(device) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> Arc<TokenizedSet> {
        // Text i has i+1 tokens, all equal to i+10.
        let ids = (0..10u32).map(|i| vec![i + 10; i as usize + 1]).collect();
        Arc::new(TokenizedSet { ids, labels: (0..10).map(|i| i % 2).collect() })
    }

    #[test]
    fn batches_pad_to_their_longest_text_with_a_mask() {
        let batches = TokenBatches::ordered(set(), 4, 0, Device::flex());
        let all: Vec<TokenBatch> = batches.batches(1).collect();
        assert_eq!(all.iter().map(|b| b.input.ids.dims()).collect::<Vec<_>>(), [[4, 4], [4, 8], [2, 10]]);
        let ids = all[0].input.ids.to_data().try_into_vec_as::<i64>().unwrap();
        assert_eq!(&ids[..8], &[10, 0, 0, 0, 11, 11, 0, 0]);
        let mask = all[0].input.mask.to_data().try_into_vec_as::<f32>().unwrap();
        assert_eq!(&mask[..8], &[1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn training_batches_cover_the_set_once_per_epoch_seeded() {
        let batches = TokenBatches::shuffled(set(), 3, 7, 0, Device::flex());
        let firsts = |epoch| -> Vec<i64> { batches.batches(epoch).flat_map(|b| b.targets.to_data().try_into_vec_as::<i64>().unwrap()).collect() };
        let seen: Vec<Vec<usize>> = batches.order(1);
        let mut flat: Vec<usize> = seen.concat();
        flat.sort();
        assert_eq!(flat, (0..10).collect::<Vec<_>>());
        assert_eq!(batches.order(1), batches.order(1));
        assert_ne!(batches.order(1), batches.order(2));
        assert_eq!(firsts(3).len(), 10);
    }
}
