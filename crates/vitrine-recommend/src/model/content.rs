//! The content-profile baseline: a customer is the sum of the feature tokens (categories,
//! genres, words) of the items they have, an item its own tokens, and the score their cosine.
//! It needs no training and no interactions with the item, so it is what a new item's
//! recommendations can be compared with.

use burn::prelude::*;

use super::ScoreContext;
use crate::data::{Interaction, RecData};

/// Customer profiles and item token vectors, unit length `[users, tokens]`, `[items, tokens]`.
pub struct ContentProfile {
    users: Tensor<2>,
    items: Tensor<2>,
}

impl ContentProfile {
    /// The profiles of `history`'s customers over the item features; `None` without item features.
    pub fn of(data: &RecData, history: &[Interaction], device: &Device) -> Option<Self> {
        let features = data.item_features.as_ref()?;
        let (n_items, n_tokens) = (data.items.len(), features.vocabulary.len().max(1));
        let mut items = vec![0.0f32; n_items * n_tokens];
        for (i, tokens) in features.tokens.iter().enumerate() {
            for &t in tokens {
                items[i * n_tokens + t as usize] = 1.0;
            }
        }
        let mut users = vec![0.0f32; data.users.len() * n_tokens];
        for r in history {
            for &t in &features.tokens[r.item as usize] {
                users[r.user as usize * n_tokens + t as usize] += 1.0;
            }
        }
        let unit = |values: Vec<f32>, rows: usize| {
            let t = Tensor::<2>::from_data(TensorData::new(values, [rows, n_tokens]), device);
            t.clone() / (t.powi_scalar(2).sum_dim(1).sqrt() + 1e-9)
        };
        Some(Self { users: unit(users, data.users.len()), items: unit(items, n_items) })
    }
}

impl super::Ranker for ContentProfile {
    fn scores(&self, users: &[u32], _context: &ScoreContext) -> Tensor<2> {
        let device = self.users.device();
        self.users.clone().select(0, super::index_tensor(users, &device)).matmul(self.items.clone().transpose())
    }

    fn scoring_batch(&self, items: usize) -> usize {
        (32_000_000 / items.max(1)).clamp(1, 1024)
    }

    fn similar_items(&self, _item: u32, _context: &ScoreContext) -> Option<Tensor<1>> {
        None
    }

    fn user_vectors(&self, _context: &ScoreContext) -> Option<Tensor<2>> {
        Some(self.users.clone())
    }
}
