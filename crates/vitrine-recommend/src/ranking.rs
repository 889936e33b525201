//! Full ranking in bounded memory: customers scored a batch at a time against every item (or a
//! candidate set), their known items pushed to the bottom and the top `k` picked on the device;
//! only `k` item indices per customer come back to the host. On a CPU backend the scores are
//! already in host memory, and the top `k` are selected there in one pass per row (burn's `topk`
//! sorts each whole row).

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use rayon::prelude::*;

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
        // Positions `r · width + column` of the items each customer must not be offered.
        let mut excluded = Vec::new();
        if let Some(exclude) = request.exclude {
            for (r, &u) in batch.iter().enumerate() {
                for &item in &exclude[u as usize] {
                    let column = match &candidates {
                        Some((_, position)) => position.get(&item).copied(),
                        None => Some(item as usize),
                    };
                    if let Some(c) = column {
                        excluded.push((r * width + c) as u32);
                    }
                }
            }
        }
        let top = top_k(scores, &excluded, k, device);
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

/// The column indices `[rows · k]` of each row's `k` highest scores, best first, the flat
/// positions `excluded` pushed to the bottom first.
fn top_k(scores: Tensor<2>, excluded: &[u32], k: usize, device: &Device) -> Vec<i64> {
    let [rows, width] = scores.dims();
    if !vitrine_core::backend::computes_in_host_memory(device) {
        let scores = match excluded.len() {
            0 => scores,
            n => {
                let penalty = Tensor::<1>::full([n], -1e30, device);
                scores.reshape([rows * width]).select_assign(0, index_tensor(excluded, device), penalty, IndexingUpdateOp::Add).reshape([rows, width])
            }
        };
        let (_, top) = scores.topk_with_indices(k, 1);
        return top.into_data().convert::<i64>().try_into_vec::<i64>().expect("int indices");
    }
    let mut values = scores.into_data().convert::<f32>().try_into_vec::<f32>().expect("float scores");
    for &position in excluded {
        values[position as usize] -= 1e30;
    }
    values.par_chunks(width.max(1)).flat_map_iter(|row| top_of_row(row, k)).collect()
}

/// The indices of `row`'s `k` highest values, best first; of equal values the first.
fn top_of_row(row: &[f32], k: usize) -> Vec<i64> {
    if k <= 64 && k < row.len() {
        // One pass keeping the best k in order: most values lose to the k-th at one comparison.
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
        for (i, &v) in row.iter().enumerate() {
            if best.len() == k && v <= best[k - 1].0 {
                continue;
            }
            best.insert(best.partition_point(|&(b, _)| b >= v), (v, i));
            best.truncate(k);
        }
        return best.into_iter().map(|(_, i)| i as i64).collect();
    }
    let better = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..row.len()).collect();
    if k < order.len() {
        order.select_nth_unstable_by(k, better);
        order.truncate(k);
    }
    order.sort_unstable_by(better);
    order.into_iter().map(|i| i as i64).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_selection_picks_what_burns_topk_picks() {
        assert_eq!(top_of_row(&[0.5, 2.0, -1.0, 2.0, 7.0], 3), [4, 1, 3], "best first, of equal values the first");
        assert_eq!(top_of_row(&[0.5, 2.0], 5), [1, 0], "k above the row's length: the whole row");
        let long: Vec<f32> = (0..500).map(|i| ((i * 37) % 101) as f32).collect();
        assert_eq!(top_of_row(&long, 100), top_of_row(&long, 100)[..100], "selection path");
        assert_eq!(top_of_row(&long, 20)[..], top_of_row(&long, 100)[..20], "the one-pass path agrees with the selection");
        let device = Device::flex();
        let (rows, width, k) = (7, 300, 10);
        let values: Vec<f32> = (0..rows * width).map(|i| ((i * 7919) % 10007) as f32 / 10007.0).collect();
        let scores = Tensor::<2>::from_data(TensorData::new(values, [rows, width]), &device);
        let (_, expected) = scores.clone().topk_with_indices(k, 1);
        let expected = expected.into_data().convert::<i64>().try_into_vec::<i64>().unwrap();
        assert_eq!(top_k(scores.clone(), &[], k, &device), expected);
        // Excluded positions drop out: row 0's best and row 1's second best.
        let (best, second) = (expected[0] as u32, expected[k + 1] as u32);
        let top = top_k(scores, &[best, (width as u32) + second], k, &device);
        assert!(!top[..k].contains(&(best as i64)) && top[k] == expected[k] && !top[k..2 * k].contains(&(second as i64)));
    }
}
