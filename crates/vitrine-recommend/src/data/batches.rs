//! Training batches, built on a background thread: shuffled interactions with sampled negatives
//! (pairs for BPR, labelled points for NeuMF), positives for in-batch softmax, rows of the
//! interaction matrix for the counted models, and item sequences for SASRec.

use std::collections::HashSet;
use std::sync::Arc;

use burn::prelude::*;
use rand::{Rng, rngs::StdRng, seq::SliceRandom};
use vitrine_core::data::{BatchSource, epoch_rng, in_background};

use super::Interaction;

/// What a recommender trains on; each model takes one kind.
#[derive(Debug, Clone)]
pub enum RecBatch {
    /// Customers `[b]`, an item each bought `[b]`, and `[b, negatives]` items they did not.
    Pairs { users: Tensor<1, Int>, positives: Tensor<1, Int>, negatives: Tensor<2, Int> },
    /// Customers, items and 1/0 labels `[b]`: each positive followed by its sampled negatives.
    Points { users: Tensor<1, Int>, items: Tensor<1, Int>, labels: Tensor<1> },
    /// Customers and an item each bought `[b]` (the other items of the batch are the negatives).
    Positives { users: Tensor<1, Int>, items: Tensor<1, Int> },
    /// Rows of the 0/1 interaction matrix `[b, items]`.
    Rows { rows: Tensor<2> },
    /// Item ids `[b, len]` (padding 0, items shifted by one), the next item at each position
    /// (`[b, len]`, item index), and a mask `[b, len]` (1 where there is a next item).
    Sequences { inputs: Tensor<2, Int>, targets: Tensor<2, Int>, mask: Tensor<2> },
}

impl RecBatch {
    /// Examples in the batch, for the driver's counts.
    pub fn count(&self) -> usize {
        match self {
            Self::Pairs { users, .. } | Self::Points { users, .. } | Self::Positives { users, .. } => users.dims()[0],
            Self::Rows { rows } => rows.dims()[0],
            Self::Sequences { mask, .. } => mask.dims()[0],
        }
    }
}

/// The kind of batch to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    Pairs { negatives: usize },
    Points { negatives: usize },
    Positives,
    Rows,
    Sequences { max_len: usize },
}

impl BatchKind {
    /// What `RecBatch::count` counts for this kind, for throughput figures.
    pub fn unit(self) -> String {
        match self {
            Self::Pairs { .. } => "interactions (customer, bought item), each with its sampled negatives".into(),
            Self::Points { .. } => "labelled (customer, item) points, positives and sampled negatives".into(),
            Self::Positives => "interactions".into(),
            Self::Rows => "customers (rows of the interaction matrix)".into(),
            Self::Sequences { max_len } => format!("sequences of up to {max_len} items, the next item predicted at each"),
        }
    }
}

/// Batches of a split's interactions for one model.
#[derive(Clone)]
pub struct InteractionBatches {
    kind: BatchKind,
    rows: Arc<Vec<Interaction>>,
    /// Every customer's known items: never sampled as negatives.
    seen: Arc<Vec<HashSet<u32>>>,
    /// Each customer's training sequence (`Sequences` and `Rows`).
    sequences: Arc<Vec<Vec<u32>>>,
    items: usize,
    batch_size: usize,
    /// `None`: one fixed order and fixed negatives (validation).
    shuffle_seed: Option<u64>,
    device: Device,
}

impl InteractionBatches {
    /// `sequences` holds each customer's items in time order (for `Rows` and `Sequences`).
    pub fn new(
        kind: BatchKind,
        rows: Arc<Vec<Interaction>>,
        seen: Arc<Vec<HashSet<u32>>>,
        sequences: Arc<Vec<Vec<u32>>>,
        items: usize,
        batch_size: usize,
        shuffle_seed: Option<u64>,
        device: Device,
    ) -> Self {
        Self { kind, rows, seen, sequences, items, batch_size, shuffle_seed, device }
    }

    /// The units a batch is cut from: interactions, or customers for `Rows`, or sequence
    /// windows for `Sequences`.
    fn units(&self) -> usize {
        match self.kind {
            BatchKind::Rows => self.sequences.len(),
            BatchKind::Sequences { max_len } => self.windows(max_len).len(),
            _ => self.rows.len(),
        }
    }

    /// Each customer's sequence cut into windows of at most `max_len + 1` items from its end
    /// (each window predicts its last `len - 1` items): (customer, start, end). Validation takes
    /// only the last window of each customer with a validation item.
    fn windows(&self, max_len: usize) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        if self.shuffle_seed.is_none() {
            let mut users: Vec<usize> = self.rows.iter().map(|r| r.user as usize).collect();
            users.sort_unstable();
            users.dedup();
            for user in users {
                let end = self.sequences[user].len();
                if end >= 2 {
                    out.push((user, end.saturating_sub(max_len + 1), end));
                }
            }
            return out;
        }
        for (user, items) in self.sequences.iter().enumerate() {
            let mut end = items.len();
            while end >= 2 {
                let start = end.saturating_sub(max_len + 1);
                out.push((user, start, end));
                if start == 0 {
                    break;
                }
                end = start + 1;
            }
        }
        out
    }

    /// Units per batch: for labelled points the batch size counts positives and negatives
    /// together, as RecBole's does.
    fn units_per_batch(&self) -> usize {
        match self.kind {
            BatchKind::Points { negatives } => (self.batch_size / (1 + negatives)).max(1),
            _ => self.batch_size,
        }
    }

    fn sample_negative(&self, user: u32, rng: &mut StdRng) -> u32 {
        let seen = &self.seen[user as usize];
        for _ in 0..100 {
            let item = rng.random_range(0..self.items as u32);
            if !seen.contains(&item) {
                return item;
            }
        }
        rng.random_range(0..self.items as u32) // a customer who has seen almost everything
    }

    fn build(&self, units: &[usize], rng: &mut StdRng, windows: &[(usize, usize, usize)]) -> RecBatch {
        let device = &self.device;
        let ints = |v: Vec<i64>| {
            let n = v.len();
            Tensor::<1, Int>::from_data(TensorData::new(v, [n]), device)
        };
        match self.kind {
            BatchKind::Pairs { negatives } => {
                let picked: Vec<Interaction> = units.iter().map(|&u| self.rows[u]).collect();
                let negative: Vec<i64> =
                    picked.iter().flat_map(|r| (0..negatives).map(|_| self.sample_negative(r.user, rng) as i64).collect::<Vec<_>>()).collect();
                let b = picked.len();
                RecBatch::Pairs {
                    users: ints(picked.iter().map(|r| r.user as i64).collect()),
                    positives: ints(picked.iter().map(|r| r.item as i64).collect()),
                    negatives: Tensor::from_data(TensorData::new(negative, [b, negatives]), device),
                }
            }
            BatchKind::Points { negatives } => {
                let (mut users, mut items, mut labels) = (Vec::new(), Vec::new(), Vec::new());
                for &u in units {
                    let r = self.rows[u];
                    users.push(r.user as i64);
                    items.push(r.item as i64);
                    labels.push(1.0f32);
                    for _ in 0..negatives {
                        users.push(r.user as i64);
                        items.push(self.sample_negative(r.user, rng) as i64);
                        labels.push(0.0);
                    }
                }
                let n = labels.len();
                RecBatch::Points { users: ints(users), items: ints(items), labels: Tensor::from_data(TensorData::new(labels, [n]), device) }
            }
            BatchKind::Positives => {
                let picked: Vec<Interaction> = units.iter().map(|&u| self.rows[u]).collect();
                RecBatch::Positives { users: ints(picked.iter().map(|r| r.user as i64).collect()), items: ints(picked.iter().map(|r| r.item as i64).collect()) }
            }
            BatchKind::Rows => {
                let mut rows = vec![0.0f32; units.len() * self.items];
                for (row, &user) in units.iter().enumerate() {
                    for &item in &self.sequences[user] {
                        rows[row * self.items + item as usize] = 1.0;
                    }
                }
                RecBatch::Rows { rows: Tensor::from_data(TensorData::new(rows, [units.len(), self.items]), device) }
            }
            BatchKind::Sequences { max_len } => {
                let b = units.len();
                let (mut inputs, mut targets, mut mask) = (vec![0i64; b * max_len], vec![0i64; b * max_len], vec![0.0f32; b * max_len]);
                for (row, &w) in units.iter().enumerate() {
                    let (user, start, end) = windows[w];
                    let items = &self.sequences[user][start..end];
                    let last = items.len() - 2;
                    for t in 0..=last {
                        inputs[row * max_len + t] = items[t] as i64 + 1;
                        targets[row * max_len + t] = items[t + 1] as i64;
                        // Validation predicts only the last item, the validation one.
                        let predicted = self.shuffle_seed.is_some() || t == last;
                        mask[row * max_len + t] = if predicted { 1.0 } else { 0.0 };
                    }
                }
                RecBatch::Sequences {
                    inputs: Tensor::from_data(TensorData::new(inputs, [b, max_len]), device),
                    targets: Tensor::from_data(TensorData::new(targets, [b, max_len]), device),
                    mask: Tensor::from_data(TensorData::new(mask, [b, max_len]), device),
                }
            }
        }
    }
}

impl BatchSource for InteractionBatches {
    type Batch = RecBatch;

    fn len(&self) -> usize {
        self.units()
    }

    fn num_batches(&self) -> usize {
        self.units().div_ceil(self.units_per_batch())
    }

    fn batches(&self, epoch: usize) -> Box<dyn Iterator<Item = RecBatch> + '_> {
        let this = self.clone();
        in_background(move || {
            let windows = match this.kind {
                BatchKind::Sequences { max_len } => this.windows(max_len),
                _ => Vec::new(),
            };
            let mut order: Vec<usize> = (0..this.units()).collect();
            // Validation draws the same negatives every epoch.
            let mut rng = epoch_rng(this.shuffle_seed.unwrap_or(0), this.shuffle_seed.map_or(0, |_| epoch));
            if this.shuffle_seed.is_some() {
                order.shuffle(&mut rng);
            }
            let chunks: Vec<Vec<usize>> = order.chunks(this.units_per_batch()).map(<[usize]>::to_vec).collect();
            chunks.into_iter().map(move |chunk| this.build(&chunk, &mut rng, &windows))
        })
    }
}
