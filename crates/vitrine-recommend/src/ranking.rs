//! Full ranking in bounded memory: customers scored a batch at a time against every item (or a
//! candidate set), their known items pushed to the bottom and the top `k` picked on the device;
//! only `k` item indices per customer come back to the host. On a CPU backend the scores are
//! already in host memory, and the top `k` are selected there, a row per task, in two
//! vectorised passes (burn's `topk` sorts each whole row).

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use rayon::prelude::*;
use vitrine_core::backend::on_compute_pool;

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
    // The column of `item` among the ranked ones (none when it is not a candidate).
    let column_of = |item: &u32| match &candidates {
        Some((_, position)) => position.get(item).copied(),
        None => Some(*item as usize),
    };
    let in_host_memory = vitrine_core::backend::computes_in_host_memory(device);
    for batch in users.chunks(model.scoring_batch(context.items)) {
        // The columns of the items row `r`'s customer must not be offered.
        let excluded = |r: usize| request.exclude.into_iter().flat_map(move |e| e[batch[r] as usize].iter()).filter_map(column_of);
        let top = on_compute_pool(device, || {
            let mut scores = model.scores(batch, context); // [b, items]
            if let Some((picked, _)) = &candidates {
                scores = scores.select(1, picked.clone()); // [b, candidates]
            }
            if in_host_memory {
                top_k_in_host_memory(scores, k, excluded)
            } else {
                let positions: Vec<u32> = (0..batch.len()).flat_map(|r| excluded(r).map(move |c| (r * width + c) as u32)).collect();
                top_k_on_device(scores, &positions, k, device)
            }
        });
        for (r, &u) in batch.iter().enumerate() {
            let mut items: Vec<u32> = top[r * k..(r + 1) * k].iter().map(|&c| request.candidates.map_or(c as u32, |cands| cands[c as usize])).collect();
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
/// positions `excluded` pushed to the bottom first; for devices with memory of their own, where
/// only the indices come back.
fn top_k_on_device(scores: Tensor<2>, excluded: &[u32], k: usize, device: &Device) -> Vec<i64> {
    let [rows, width] = scores.dims();
    let scores = match excluded.len() {
        0 => scores,
        n => {
            let penalty = Tensor::<1>::full([n], -1e30, device);
            scores.reshape([rows * width]).select_assign(0, index_tensor(excluded, device), penalty, IndexingUpdateOp::Add).reshape([rows, width])
        }
    };
    let (_, top) = scores.topk_with_indices(k, 1);
    top.into_data().convert::<i64>().try_into_vec::<i64>().expect("int indices")
}

/// As [`top_k_on_device`], on scores already in host memory: each row's exclusions and selection
/// in one parallel pass while the row is in cache (burn's `topk` sorts each whole row).
fn top_k_in_host_memory<I: Iterator<Item = usize>>(scores: Tensor<2>, k: usize, excluded: impl Fn(usize) -> I + Sync) -> Vec<i64> {
    let [_, width] = scores.dims();
    let mut values = scores.into_data().convert::<f32>().try_into_vec::<f32>().expect("float scores");
    values
        .par_chunks_mut(width.max(1))
        .enumerate()
        .flat_map_iter(|(r, row)| {
            for column in excluded(r) {
                row[column] -= 1e30;
            }
            top_of_row(row, k)
        })
        .collect()
}

/// The indices of `row`'s `k` highest values, best first; of equal values the first.
fn top_of_row(row: &[f32], k: usize) -> Vec<i64> {
    if k <= 64
        && k < row.len()
        && let Some(top) = top_of_row_by_floor(row, k)
    {
        return top;
    }
    top_of_row_by_selection(row, k)
}

/// [`top_of_row`] for any `k`: a selection, then a sort of the `k` selected.
fn top_of_row_by_selection(row: &[f32], k: usize) -> Vec<i64> {
    let better = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..row.len()).collect();
    if k < order.len() {
        order.select_nth_unstable_by(k, better);
        order.truncate(k);
    }
    order.sort_unstable_by(better);
    order.into_iter().map(|i| i as i64).collect()
}

/// The best `k` (at most 64) values offered so far with their positions, best first; of equal
/// values the first offered stays ahead.
struct Leaders {
    held: [(f32, usize); 64],
    len: usize,
    k: usize,
}

impl Leaders {
    fn new(k: usize) -> Self {
        Leaders { held: [(0.0, 0); 64], len: 0, k }
    }

    /// The k-th best value, once there are k.
    fn last(&self) -> Option<f32> {
        (self.len == self.k).then(|| self.held[self.k - 1].0)
    }

    /// Takes `v` (not a NaN) in if it beats the k-th, moving it up past the values it beats, as
    /// in an insertion sort.
    fn offer(&mut self, v: f32, position: usize) {
        if self.last().is_some_and(|last| v <= last) {
            return;
        }
        let mut at = self.len.min(self.k - 1);
        while at > 0 && self.held[at - 1].0 < v {
            self.held[at] = self.held[at - 1];
            at -= 1;
        }
        self.held[at] = (v, position);
        self.len = (self.len + 1).min(self.k);
    }
}

/// [`top_of_row`] for small `k` (at most 64) in two vectorised passes, or `None` if the row holds
/// a NaN. The first takes the maximum of each of 16 interleaved columns (values `i`, `i + 16`,
/// ...); the k-th highest of those is a floor under the row's k-th highest value, since k
/// different values reach it. The second offers only the values that reach the floor, a few more
/// than k, where a one-pass selection over a row in no useful order inserts some 50 (of 1,682).
fn top_of_row_by_floor(row: &[f32], k: usize) -> Option<Vec<i64>> {
    const LANES: usize = 16;
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let (whole, rest) = row.as_chunks::<LANES>();
    for chunk in whole {
        for i in 0..LANES {
            max[i] = if chunk[i] > max[i] { chunk[i] } else { max[i] };
            nan[i] |= chunk[i].is_nan();
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        max[i] = if v > max[i] { v } else { max[i] };
        nan[i] |= v.is_nan();
    }
    if nan.contains(&true) {
        return None;
    }
    let floor = match row.len() >= LANES && k <= LANES {
        true => {
            let mut maxima = Leaders::new(k);
            max.iter().for_each(|&m| maxima.offer(m, 0));
            maxima.last().expect("k maxima")
        }
        false => f32::NEG_INFINITY,
    };
    let mut leaders = Leaders::new(k);
    for (c, chunk) in whole.iter().enumerate() {
        if chunk.iter().fold(false, |any, &v| any | (v >= floor)) {
            for (i, &v) in chunk.iter().enumerate().filter(|&(_, &v)| v >= floor) {
                leaders.offer(v, c * LANES + i);
            }
        }
    }
    for (i, &v) in rest.iter().enumerate().filter(|&(_, &v)| v >= floor) {
        leaders.offer(v, whole.len() * LANES + i);
    }
    Some(leaders.held[..leaders.len].iter().map(|&(_, i)| i as i64).collect())
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
        // The floor path against the selection: rows with ties, rising and falling rows (the
        // worst and best order for a one-pass selection), rows shorter than 16 or k, -1e30s.
        let ties: Vec<f32> = (0..500).map(|i| ((i * 37) % 101) as f32).collect();
        let rising: Vec<f32> = (0..1682).map(|i| i as f32 / 1682.0).collect();
        let falling: Vec<f32> = rising.iter().rev().copied().collect();
        let pushed_down: Vec<f32> = (0..300).map(|i| if i % 3 == 0 { -1e30 } else { ((i * 7919) % 10007) as f32 }).collect();
        let all_equal = vec![1.5f32; 200];
        for row in [&ties[..], &rising, &falling, &pushed_down, &all_equal, &ties[..40], &rising[..17]] {
            for k in [1, 3, 10, 16, 64] {
                if k < row.len() {
                    assert_eq!(top_of_row_by_floor(row, k).unwrap(), top_of_row_by_selection(row, k), "k {k} of {} values", row.len());
                }
            }
        }
        assert_eq!(top_of_row_by_floor(&[1.0, f32::NAN, 2.0], 2), None, "a NaN takes the selection");
        let device = Device::flex();
        let (rows, width, k) = (7, 300, 10);
        let values: Vec<f32> = (0..rows * width).map(|i| ((i * 7919) % 10007) as f32 / 10007.0).collect();
        let scores = Tensor::<2>::from_data(TensorData::new(values, [rows, width]), &device);
        let (_, expected) = scores.clone().topk_with_indices(k, 1);
        let expected = expected.into_data().convert::<i64>().try_into_vec::<i64>().unwrap();
        assert_eq!(top_k_on_device(scores.clone(), &[], k, &device), expected);
        assert_eq!(top_k_in_host_memory(scores.clone(), k, |_| std::iter::empty()), expected);
        // Excluded columns drop out: row 0's best and row 1's second best, both ways.
        let (best, second) = (expected[0] as usize, expected[k + 1] as usize);
        let on_device = top_k_on_device(scores.clone(), &[best as u32, (width + second) as u32], k, &device);
        let in_host_memory = top_k_in_host_memory(scores, k, |r| [(0, best), (1, second)].into_iter().filter(move |&(row, _)| row == r).map(|(_, c)| c));
        assert_eq!(in_host_memory, on_device);
        let top = in_host_memory;
        assert!(!top[..k].contains(&(best as i64)) && top[k] == expected[k] && !top[k..2 * k].contains(&(second as i64)));
        assert!(top[2 * k..] == expected[2 * k..], "the other rows are untouched");
    }
}
