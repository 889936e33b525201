//! Each recommender built from a config and the data's sizes, and the kind of batch it trains on.

use anyhow::{Result, bail};
use burn::prelude::*;

use super::Recommender;
use super::counted::{ITEM_KNN_MAX_ITEMS, ItemKnn, Popularity};
use super::factorization::{MatrixFactorization, NeuMf};
use super::sasrec::{Sasrec, SasrecShape};
use super::two_tower::{TowerShape, TwoTower, TwoTowerTraining};
use crate::config::RecommendConfig;
use crate::data::RecData;
use crate::data::batches::BatchKind;

/// A recommender built from a config, and the batches it trains on.
pub trait Build: Recommender + Sized {
    fn build(config: &RecommendConfig, data: &RecData, device: &Device) -> Result<Self>;
    fn batch_kind(config: &RecommendConfig) -> BatchKind;
}

impl Build for Popularity {
    fn build(_: &RecommendConfig, data: &RecData, device: &Device) -> Result<Self> {
        Ok(Popularity::new(data.items.len(), device))
    }
    fn batch_kind(_: &RecommendConfig) -> BatchKind {
        BatchKind::Rows
    }
}

impl Build for ItemKnn {
    fn build(config: &RecommendConfig, data: &RecData, device: &Device) -> Result<Self> {
        let items = data.items.len();
        if items > ITEM_KNN_MAX_ITEMS {
            bail!(
                "item-knn keeps an item × item table: {items} items need {:.1} GB; it takes up to {ITEM_KNN_MAX_ITEMS} items (use bpr-mf or two-tower)",
                (items * items * 8) as f64 / 1e9
            );
        }
        Ok(ItemKnn::new(items, config.model.neighbours, device))
    }
    fn batch_kind(_: &RecommendConfig) -> BatchKind {
        BatchKind::Rows
    }
}

impl Build for MatrixFactorization {
    fn build(config: &RecommendConfig, data: &RecData, device: &Device) -> Result<Self> {
        Ok(MatrixFactorization::new(data.users.len(), data.items.len(), config.model.embedding_dim, device))
    }
    fn batch_kind(config: &RecommendConfig) -> BatchKind {
        BatchKind::Pairs { negatives: config.model.negatives }
    }
}

impl Build for NeuMf {
    fn build(config: &RecommendConfig, data: &RecData, device: &Device) -> Result<Self> {
        let m = &config.model;
        Ok(NeuMf::new(data.users.len(), data.items.len(), m.embedding_dim, &m.hidden, m.dropout, device))
    }
    fn batch_kind(config: &RecommendConfig) -> BatchKind {
        BatchKind::Points { negatives: config.model.negatives }
    }
}

impl Build for TwoTower {
    fn build(config: &RecommendConfig, data: &RecData, device: &Device) -> Result<Self> {
        let m = &config.model;
        let shape = |ids: usize, features: &Option<crate::data::Features>| TowerShape {
            ids,
            vocabulary: features.as_ref().map(|f| f.vocabulary.len()),
            numeric_columns: features.as_ref().map_or(0, |f| f.numeric_columns.len()),
            bias: false,
        };
        let users = shape(data.users.len(), &data.user_features);
        let items = TowerShape { bias: m.item_bias, ..shape(data.items.len(), &data.item_features) };
        let training =
            TwoTowerTraining { temperature: m.temperature, id_dropout: m.id_dropout, extra_negatives: m.extra_negatives, full_softmax: m.full_softmax };
        Ok(TwoTower::new(&users, &items, m.embedding_dim, &m.hidden, m.dropout, training, device))
    }
    fn batch_kind(_: &RecommendConfig) -> BatchKind {
        BatchKind::Positives
    }
}

impl Build for Sasrec {
    fn build(config: &RecommendConfig, data: &RecData, device: &Device) -> Result<Self> {
        let m = &config.model;
        let shape = SasrecShape {
            items: data.items.len(),
            dim: m.embedding_dim,
            max_len: m.max_len,
            layers: m.layers,
            heads: m.heads,
            feed_forward: m.feed_forward,
            dropout: m.dropout,
        };
        Ok(Sasrec::new(&shape, device))
    }
    fn batch_kind(config: &RecommendConfig) -> BatchKind {
        BatchKind::Sequences { max_len: config.model.max_len }
    }
}
