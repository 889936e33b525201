//! At inference a recurrent layer over token embeddings projects each token's embedding by
//! `W_ih` at every step, half of a step's arithmetic for `text-lstm-attn` (input 128, hidden
//! 128). That projection depends on the token alone: `E·W_ihᵀ + b_ih` for the whole vocabulary,
//! per direction, turns it into a row lookup. The table is made once the layer has projected as
//! many tokens as the vocabulary has (so making it costs at most what it has saved by then), and
//! kept while the weights it came from are the ones the layer holds.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;

/// Tables larger than this are not made (a vocabulary of 30,000 tokens and an LSTM of 256 units
/// is 245 MB); the layer projects as before.
const MOST_BYTES: usize = 256 << 20;

/// A layer's table of token projections, shared by the layer's clones, made when it pays.
#[derive(Clone, Default)]
pub struct TokenProjections(Arc<Mutex<Option<Entry>>>);

struct Entry {
    /// The tensors the table is made from (embedding, then `W_ih` and `b_ih` of each direction),
    /// held so that their storage cannot be freed and reused: the same storage is then the same
    /// values, since `flex` copies a shared tensor before writing to it.
    sources: Vec<FlexTensor>,
    /// Tokens projected without the table since these sources came.
    tokens_projected: usize,
    table: Option<Arc<Table>>,
}

/// `[2, vocabulary, G·h]`: each direction's `E·W_ihᵀ + b_ih`.
pub struct Table {
    values: Vec<f32>,
    pub vocabulary: usize,
    /// G·h, a row's values.
    pub width: usize,
}

impl Table {
    /// Direction `d`'s rows, `[vocabulary, width]`.
    pub fn direction(&self, d: usize) -> &[f32] {
        &self.values[d * self.vocabulary * self.width..][..self.vocabulary * self.width]
    }
}

impl std::fmt::Debug for TokenProjections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let made = self.0.lock().map(|entry| entry.as_ref().is_some_and(|e| e.table.is_some())).unwrap_or(false);
        write!(f, "TokenProjections({})", if made { "made" } else { "not made" })
    }
}

impl TokenProjections {
    /// The table for these weights when it exists or pays now, counting `tokens` as projected
    /// otherwise; `None` off `flex` in f32, or where the table would be too large.
    /// `embedding` `[vocabulary, input]`, `w_ih` `[G·h, input]` and `b_ih` `[G·h]` of each
    /// direction, as the layer holds them.
    pub fn for_weights(&self, embedding: &Tensor<2>, w_ih: [&Tensor<2>; 2], b_ih: [&Tensor<1>; 2], tokens: usize) -> Option<Arc<Table>> {
        let [vocabulary, _] = embedding.dims();
        let width = w_ih[0].dims()[0];
        if vocabulary * 2 * width * size_of::<f32>() > MOST_BYTES {
            return None;
        }
        let flex = |t: Tensor<2>| t.try_into_primitive::<Flex>().ok().filter(|t| t.dtype() == DType::F32 && t.as_slice::<f32>().is_some());
        let sources = [embedding.clone(), w_ih[0].clone(), w_ih[1].clone(), b_ih[0].clone().unsqueeze(), b_ih[1].clone().unsqueeze()].map(flex);
        let sources: Vec<FlexTensor> = sources.into_iter().collect::<Option<_>>()?;
        let mut entry = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !entry.as_ref().is_some_and(|e| same_storage(&e.sources, &sources)) {
            *entry = Some(Entry { sources, tokens_projected: 0, table: None });
        }
        let entry = entry.as_mut().expect("set above");
        if entry.table.is_none() {
            entry.tokens_projected = entry.tokens_projected.saturating_add(tokens);
            if entry.tokens_projected < vocabulary {
                return None;
            }
            let values = project(&entry.sources, vocabulary, width);
            entry.table = Some(Arc::new(Table { values, vocabulary, width }));
        }
        entry.table.clone()
    }
}

/// `[2, vocabulary, width]`: each direction's `E·W_ihᵀ + b_ih` from the sources of an [`Entry`]
/// (embedding `[vocabulary, input]`, then `W_ih` `[width, input]` and `b_ih` of each direction),
/// the two directions on the two halves of the thread pool, written once. (burn's product, stack
/// and copy took 90–150 ms for `text-lstm-attn`'s table; this takes ~6 ms a direction, plus the
/// first touch of 32 MB, 5–80 ms as the kernel finds huge pages.)
fn project(sources: &[FlexTensor], vocabulary: usize, width: usize) -> Vec<f32> {
    let slice = |i: usize| sources[i].as_slice::<f32>().expect("checked when kept");
    let (embedding, input) = (slice(0), sources[0].layout().shape()[1]);
    let mut values = Vec::with_capacity(2 * vocabulary * width);
    let (first, second) = values.spare_capacity_mut()[..2 * vocabulary * width].split_at_mut(vocabulary * width);
    let direction = |d: usize, rows: &mut [MaybeUninit<f32>]| {
        let (w_ih, b_ih) = (slice(1 + d), slice(3 + d));
        assert!(embedding.len() == vocabulary * input && w_ih.len() == width * input && b_ih.len() == width, "sources of matching sizes");
        // SAFETY: `rows` has room for `[vocabulary, width]`, which the product writes without
        // reading (no accumulation); the operands' strides stay inside their slices.
        let rows = unsafe {
            super::matmul_raw(vocabulary, width, input, rows.as_mut_ptr().cast(), (width, 1), false, embedding.as_ptr(), (input, 1), w_ih.as_ptr(), (1, input));
            std::slice::from_raw_parts_mut(rows.as_mut_ptr().cast::<f32>(), rows.len())
        };
        for row in rows.chunks_exact_mut(width) {
            row.iter_mut().zip(b_ih).for_each(|(v, b)| *v += b);
        }
    };
    rayon::join(|| direction(0, first), || direction(1, second));
    // SAFETY: each direction wrote its half.
    unsafe { values.set_len(2 * vocabulary * width) };
    values
}

/// Whether each tensor views the same values of the same storage as its counterpart.
fn same_storage(kept: &[FlexTensor], given: &[FlexTensor]) -> bool {
    let view = |t: &FlexTensor| t.as_slice::<f32>().map(|s| (s.as_ptr(), s.len()));
    kept.len() == given.len() && kept.iter().zip(given).all(|(a, b)| view(a) == view(b) && a.layout().shape() == b.layout().shape())
}
