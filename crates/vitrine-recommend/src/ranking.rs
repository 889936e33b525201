//! Full ranking in bounded memory: customers scored a batch at a time against every item (or a
//! candidate set), their known items pushed to the bottom and the top `k` picked on the device;
//! only `k` item indices per customer come back to the host.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

use crate::data::Interaction;
use crate::metrics::{RankingMetrics, RankingScores};
use crate::model::{Ranker, ScoreContext, index_tensor};

/// What to rank and what to leave out.
#[derive(Clone, Copy)]
pub struct RankRequest<'a> {
    pub k: usize,
    /// Each customer's items never to recommend (what they already have).
    pub exclude: Option<&'a [HashSet<u32>]>,
    /// Rank only these items (new items for the cold-start evaluation).
    pub candidates: Option<&'a [u32]>,
}

/// Calls `each` with every customer of `users` and their top `k` items, best first.
pub fn rank(
    model: &dyn Ranker,
    users: &[u32],
    context: &ScoreContext,
    request: RankRequest,
    device: &Device,
    mut each: impl FnMut(u32, Vec<u32>) -> Result<()>,
) -> Result<()> {
    let candidates: Option<(Tensor<1, Int>, HashMap<u32, usize>)> =
        request.candidates.map(|c| (index_tensor(c, device), c.iter().enumerate().map(|(p, &i)| (i, p)).collect()));
    let width = request.candidates.map_or(context.items, <[u32]>::len);
    let k = request.k.min(width);
    if k == 0 {
        return Ok(());
    }
    for batch in users.chunks(model.scoring_batch(context.items)) {
        let mut scores = model.scores(batch, context); // [b, items]
        if let Some((picked, _)) = &candidates {
            scores = scores.select(1, picked.clone()); // [b, candidates]
        }
        let b = batch.len();
        if let Some(exclude) = request.exclude {
            let mut flat = Vec::new();
            for (r, &u) in batch.iter().enumerate() {
                for &item in &exclude[u as usize] {
                    let column = match &candidates {
                        Some((_, position)) => position.get(&item).copied(),
                        None => Some(item as usize),
                    };
                    if let Some(c) = column {
                        flat.push((r * width + c) as u32);
                    }
                }
            }
            if !flat.is_empty() {
                let n = flat.len();
                let penalty = Tensor::<1>::full([n], -1e30, device);
                scores = scores.reshape([b * width]).select_assign(0, index_tensor(&flat, device), penalty, IndexingUpdateOp::Add).reshape([b, width]);
            }
        }
        let (_, top) = scores.topk_with_indices(k, 1);
        let top = top.into_data().convert::<i64>().try_into_vec::<i64>().expect("int indices");
        for (r, &u) in batch.iter().enumerate() {
            let mut items: Vec<u32> = top[r * k..(r + 1) * k]
                .iter()
                .map(|&c| request.candidates.map_or(c as u32, |cands| cands[c as usize]))
                .collect();
            // Fewer allowed items than k: what was pushed to the bottom stays out.
            if let Some(exclude) = request.exclude {
                items.retain(|i| !exclude[u as usize].contains(i));
            }
            each(u, items)?;
        }
    }
    Ok(())
}

/// Ranking metrics of `model` on the held-out `relevant` interactions: every customer with one is
/// ranked, their `exclude` items left out.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &dyn Ranker,
    context: &ScoreContext,
    relevant: &[Interaction],
    exclude: &[HashSet<u32>],
    cutoffs: &[usize],
    counts: &[u64],
    candidates: Option<&[u32]>,
    device: &Device,
) -> Result<RankingScores> {
    let mut wanted: Vec<HashSet<u32>> = vec![HashSet::new(); exclude.len()];
    for r in relevant {
        wanted[r.user as usize].insert(r.item);
    }
    let users: Vec<u32> = (0..wanted.len() as u32).filter(|&u| !wanted[u as usize].is_empty()).collect();
    let mut metrics = RankingMetrics::new(cutoffs, counts);
    let request = RankRequest { k: metrics.max_k(), exclude: Some(exclude), candidates };
    rank(model, &users, context, request, device, |u, items| {
        metrics.add(&items, &wanted[u as usize]);
        Ok(())
    })?;
    Ok(metrics.scores())
}
