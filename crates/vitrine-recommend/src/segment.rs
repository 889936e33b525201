//! Customer segmentation: K-means (k-means++ starts, several restarts, Lloyd steps on burn
//! tensors) over customer vectors, the silhouette score that compares choices of k, what is
//! characteristic of each segment, and a 2-D PCA scatter of the segments.

use anyhow::{Result, bail, ensure};
use burn::prelude::*;
use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde::Serialize;
use vitrine_core::plot::{Series, scatter_chart};

/// A clustering of the rows of a matrix.
#[derive(Debug, Clone)]
pub struct Clustering {
    pub k: usize,
    /// The segment of each row.
    pub assignment: Vec<u32>,
    /// Sum of squared distances to the assigned centres.
    pub inertia: f64,
}

/// Squared distances `[n, k]` between rows of `x` `[n, d]` and of `centres` `[k, d]`.
fn squared_distances(x: &Tensor<2>, centres: &Tensor<2>) -> Tensor<2> {
    let x2 = x.clone().powi_scalar(2).sum_dim(1); // [n, 1]
    let c2 = centres.clone().powi_scalar(2).sum_dim(1).transpose(); // [1, k]
    (x2 + c2 - x.clone().matmul(centres.clone().transpose()) * 2.0).clamp_min(0.0)
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 data")
}

/// k-means++ starting centres: each next one drawn with probability ∝ squared distance to the
/// nearest centre so far.
fn plus_plus(x: &Tensor<2>, k: usize, rng: &mut StdRng) -> Tensor<2> {
    let n = x.dims()[0];
    let mut chosen = vec![rng.random_range(0..n)];
    let row = |i: usize| x.clone().narrow(0, i, 1);
    let mut nearest = host(squared_distances(x, &row(chosen[0])));
    while chosen.len() < k {
        let total: f64 = nearest.iter().map(|&d| d as f64).sum();
        let next = if total <= 0.0 {
            rng.random_range(0..n)
        } else {
            let mut target = rng.random::<f64>() * total;
            nearest
                .iter()
                .position(|&d| {
                    target -= d as f64;
                    target <= 0.0
                })
                .unwrap_or(n - 1)
        };
        chosen.push(next);
        let d = host(squared_distances(x, &row(next)));
        for (m, v) in nearest.iter_mut().zip(d) {
            *m = m.min(v);
        }
    }
    Tensor::cat(chosen.into_iter().map(row).collect(), 0)
}

/// One run of Lloyd's algorithm from k-means++ centres.
fn lloyd(x: &Tensor<2>, k: usize, rng: &mut StdRng, iterations: usize) -> Clustering {
    let [n, _] = x.dims();
    let mut centres = plus_plus(x, k, rng);
    let mut assignment = Tensor::<1, Int>::zeros([n], &x.device());
    for _ in 0..iterations {
        let (_, nearest) = squared_distances(x, &centres).min_dim_with_indices(1);
        let next = nearest.reshape([n]);
        let changed = next.clone().not_equal(assignment.clone()).int().sum().into_scalar::<i64>();
        assignment = next;
        let members: Tensor<2> = assignment.clone().one_hot::<2>(k).float(); // [n, k]
        let counts = members.clone().sum_dim(0).transpose(); // [k, 1]
        let sums = members.transpose().matmul(x.clone()); // [k, d]
        // An empty segment keeps its old centre.
        let empty = counts.clone().equal_elem(0.0);
        centres = (sums / counts.clamp_min(1.0)).mask_where(empty.expand(centres.shape()), centres);
        if changed == 0 {
            break;
        }
    }
    let distances = squared_distances(x, &centres);
    let (best, _) = distances.min_dim_with_indices(1);
    let inertia = best.sum().into_scalar::<f32>() as f64;
    let assignment = assignment.into_data().convert::<i64>().try_into_vec::<i64>().expect("ints").into_iter().map(|a| a as u32).collect();
    Clustering { k, assignment, inertia }
}

/// K-means of the rows of `x` into `k` segments: the best (lowest inertia) of `restarts` runs.
pub fn kmeans(x: &Tensor<2>, k: usize, restarts: usize, seed: u64) -> Result<Clustering> {
    let n = x.dims()[0];
    ensure!(k >= 1 && k <= n, "k = {k} segments need at least {k} customers, there are {n}");
    let mut rng = StdRng::seed_from_u64(seed);
    let runs = (0..restarts.max(1)).map(|_| lloyd(x, k, &mut rng, 100));
    Ok(runs.min_by(|a, b| a.inertia.total_cmp(&b.inertia)).expect("at least one run"))
}

/// The mean silhouette of a clustering (1: tight, apart segments; 0: overlapping), on a seeded
/// sample of at most `sample` rows.
pub fn silhouette(x: &Tensor<2>, clustering: &Clustering, sample: usize, seed: u64) -> f64 {
    let n = x.dims()[0];
    let mut rows: Vec<usize> = (0..n).collect();
    rows.shuffle(&mut StdRng::seed_from_u64(seed));
    rows.truncate(sample);
    rows.sort_unstable();
    let picked = x.clone().select(0, crate::model::index_tensor(&rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), &x.device()));
    let m = rows.len();
    let distances = host(squared_distances(&picked, &picked).sqrt());
    let labels: Vec<usize> = rows.iter().map(|&r| clustering.assignment[r] as usize).collect();
    let mut total = 0.0;
    for i in 0..m {
        let mut sums = vec![(0.0f64, 0usize); clustering.k];
        for j in 0..m {
            if i != j {
                let s = &mut sums[labels[j]];
                s.0 += distances[i * m + j] as f64;
                s.1 += 1;
            }
        }
        let own = sums[labels[i]];
        if own.1 == 0 {
            continue; // a segment of one: silhouette 0
        }
        let a = own.0 / own.1 as f64;
        let b = sums.iter().enumerate().filter(|(c, s)| *c != labels[i] && s.1 > 0).map(|(_, s)| s.0 / s.1 as f64).fold(f64::INFINITY, f64::min);
        if b.is_finite() {
            total += (b - a) / a.max(b).max(1e-12);
        }
    }
    total / m.max(1) as f64
}

/// Rows scaled to unit length: segments by the direction of taste, not by how much a customer buys.
pub fn unit_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt() + 1e-9;
    x / norm
}

/// The first two principal components of the rows of `x`, for a scatter plot.
pub fn pca_2d(x: &Tensor<2>) -> Result<Vec<(f64, f64)>> {
    let [n, d] = x.dims();
    if n < 2 || d < 2 {
        bail!("a 2-D projection needs at least two customers and two dimensions");
    }
    let values = host(x.clone());
    let data = DMatrix::from_row_iterator(n, d, values.iter().map(|&v| v as f64));
    let mean = data.row_mean();
    let centred = DMatrix::from_fn(n, d, |r, c| data[(r, c)] - mean[c]);
    let covariance = centred.transpose() * &centred / (n as f64 - 1.0);
    let eigen = SymmetricEigen::new(covariance);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    let (first, second) = (eigen.eigenvectors.column(order[0]).into_owned(), eigen.eigenvectors.column(order[1]).into_owned());
    Ok((0..n).map(|r| (centred.row(r).dot(&first.transpose()), centred.row(r).dot(&second.transpose()))).collect())
}

/// Draws the segments on their first two principal components (a seeded sample of at most
/// 5,000 customers).
pub fn scatter_png(path: &std::path::Path, x: &Tensor<2>, clustering: &Clustering, seed: u64) -> Result<()> {
    let n = x.dims()[0];
    let mut rows: Vec<u32> = (0..n as u32).collect();
    rows.shuffle(&mut StdRng::seed_from_u64(seed));
    rows.truncate(5000);
    let picked = x.clone().select(0, crate::model::index_tensor(&rows, &x.device()));
    let points = pca_2d(&picked)?;
    let names: Vec<String> = (0..clustering.k).map(|s| format!("segment {s}")).collect();
    let mut groups: Vec<Series> = names.iter().map(|name| Series { name, points: Vec::new() }).collect();
    for (&row, point) in rows.iter().zip(points) {
        groups[clustering.assignment[row as usize] as usize].points.push(point);
    }
    scatter_chart(path, &format!("{} customer segments (PCA)", clustering.k), ("first principal component", "second principal component"), &groups)
}

/// What marks one segment out.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentSummary {
    pub segment: usize,
    pub customers: usize,
    /// Items its customers have far more often than customers overall: (label, share of the
    /// segment's customers who have it, lift over everyone).
    pub items: Vec<(String, f64, f64)>,
    /// Item categories (feature tokens) likewise, over the segment's interactions.
    pub categories: Vec<(String, f64, f64)>,
}

/// The `top` entries of `counts_in` (per segment member) most over-represented relative to
/// `counts_all` (per everyone), among those held by at least `min_count` members.
pub fn characteristic(counts_in: &[f64], size: usize, counts_all: &[f64], total: usize, min_count: f64, top: usize) -> Vec<(usize, f64, f64)> {
    let mut scored: Vec<(usize, f64, f64)> = counts_in
        .iter()
        .zip(counts_all)
        .enumerate()
        .filter(|(_, (c, _))| **c >= min_count)
        .map(|(i, (&c, &all))| {
            let share = c / size.max(1) as f64;
            (i, share, share / (all / total.max(1) as f64).max(1e-12))
        })
        .collect();
    scored.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.1.total_cmp(&a.1)));
    scored.truncate(top);
    scored
}

/// What `vitrine segment` found.
#[derive(Debug, Clone, Serialize)]
pub struct Segmentation {
    /// The k kept: the only one asked for, or the best silhouette of a range.
    pub k: usize,
    /// The mean silhouette of each k tried.
    pub silhouettes: Vec<(usize, f64)>,
    /// What the segments are made from (`bpr-mf customer vectors`, `customer features`).
    pub vectors: String,
    pub segments: Vec<SegmentSummary>,
    #[serde(skip)]
    pub assignment: Vec<u32>,
}

/// The rows of customer features `[users, tokens + numbers]`: tokens as 0/1, numbers as they are.
fn feature_matrix(features: &crate::data::Features, device: &Device) -> Tensor<2> {
    let (n, v, c) = (features.tokens.len(), features.vocabulary.len(), features.numeric_columns.len());
    let mut rows = vec![0.0f32; n * (v + c)];
    for (u, tokens) in features.tokens.iter().enumerate() {
        for &t in tokens {
            rows[u * (v + c) + t as usize] = 1.0;
        }
        for (j, &x) in features.numbers[u].iter().enumerate() {
            rows[u * (v + c) + v + j] = x;
        }
    }
    Tensor::from_data(TensorData::new(rows, [n, v + c]), device)
}

/// Segments the customers of `run` into each `k` of `ks` (keeping the best silhouette), and says
/// what characterises each segment.
pub fn segment(run: &crate::inference::RecommendRun, ks: &[usize], restarts: usize, seed: u64, device: &Device) -> Result<(Segmentation, Tensor<2>)> {
    let context = run.serving_context(device);
    let (vectors, what) = match (run.ranker().user_vectors(&context), &run.data.user_features) {
        (Some(v), _) => (v, format!("{} customer vectors", run.config.model.name.name())),
        (None, Some(f)) => (feature_matrix(f, device), "customer features".to_string()),
        (None, None) => bail!(
            "{} has no customer vectors to segment: use a bpr-mf, neumf, two-tower or sasrec run, or give data.users features",
            run.config.model.name.name()
        ),
    };
    let x = unit_rows(vectors);
    let mut best: Option<(Clustering, f64)> = None;
    let mut silhouettes = Vec::new();
    for &k in ks {
        let clustering = kmeans(&x, k, restarts, seed)?;
        let s = silhouette(&x, &clustering, 2000, seed);
        silhouettes.push((k, s));
        if best.as_ref().is_none_or(|(_, b)| s > *b) {
            best = Some((clustering, s));
        }
    }
    let (clustering, _) = best.expect("at least one k");
    let segments = describe(run, &clustering);
    Ok((Segmentation { k: clustering.k, silhouettes, vectors: what, segments, assignment: clustering.assignment }, x))
}

/// Each segment's size, most characteristic items and categories.
fn describe(run: &crate::inference::RecommendRun, clustering: &Clustering) -> Vec<SegmentSummary> {
    let (users, items) = (run.data.users.len(), run.data.items.len());
    let k = clustering.k;
    let sizes: Vec<usize> = (0..k).map(|s| clustering.assignment.iter().filter(|&&a| a as usize == s).count()).collect();
    let mut holders = vec![vec![0.0f64; items]; k];
    let mut holders_all = vec![0.0f64; items];
    let mut seen = std::collections::HashSet::new();
    let features = run.data.item_features.as_ref();
    let tokens = features.map_or(0, |f| f.vocabulary.len());
    let (mut token_counts, mut token_all, mut interactions) = (vec![vec![0.0f64; tokens]; k], vec![0.0f64; tokens], vec![0usize; k]);
    for r in run.everything() {
        if !seen.insert((r.user, r.item)) {
            continue;
        }
        let s = clustering.assignment[r.user as usize] as usize;
        holders[s][r.item as usize] += 1.0;
        holders_all[r.item as usize] += 1.0;
        interactions[s] += 1;
        if let Some(f) = features {
            for &t in &f.tokens[r.item as usize] {
                token_counts[s][t as usize] += 1.0;
                token_all[t as usize] += 1.0;
            }
        }
    }
    let total_interactions = seen.len();
    (0..k)
        .map(|s| {
            let min_count = (sizes[s] as f64 / 20.0).max(3.0);
            let items = characteristic(&holders[s], sizes[s], &holders_all, users, min_count, 5)
                .into_iter()
                .map(|(i, share, lift)| (run.item_label(i as u32), share, lift))
                .collect();
            let categories = match features {
                // Categories that make up at least 2% of the segment's interactions.
                Some(f) => characteristic(&token_counts[s], interactions[s], &token_all, total_interactions, (interactions[s] as f64 * 0.02).max(10.0), 5)
                    .into_iter()
                    .map(|(t, share, lift)| (f.vocabulary[t].clone(), share, lift))
                    .collect(),
                None => Vec::new(),
            };
            SegmentSummary { segment: s, customers: sizes[s], items, categories }
        })
        .collect()
}

impl Segmentation {
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{} segments of customers by {}
",
            self.k, self.vectors
        );
        if self.silhouettes.len() > 1 {
            out += "silhouette by k:";
            for (k, s) in &self.silhouettes {
                out += &format!("  {k}: {s:.3}");
            }
            out += &format!(
                "  (kept k = {})
",
                self.k
            );
        } else if let Some((_, s)) = self.silhouettes.first() {
            out += &format!(
                "silhouette {s:.3}
"
            );
        }
        for seg in &self.segments {
            out += &format!(
                "
segment {} ({} customers)
",
                seg.segment, seg.customers
            );
            for (label, share, lift) in &seg.items {
                out += &format!(
                    "  item  {label}  ({:.0}% of the segment, {lift:.1}× everyone)
",
                    100.0 * share
                );
            }
            for (token, share, lift) in &seg.categories {
                out += &format!(
                    "  category  {token}  ({:.0}% of its interactions, {lift:.1}× everyone)
",
                    100.0 * share
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three tight blobs far apart.
    fn blobs(device: &Device) -> (Tensor<2>, Vec<u32>) {
        let mut rng = StdRng::seed_from_u64(3);
        let centres = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)];
        let mut values = Vec::new();
        let mut truth = Vec::new();
        for i in 0..150 {
            let (cx, cy) = centres[i % 3];
            values.push(cx + rng.random_range(-1.0..1.0f32));
            values.push(cy + rng.random_range(-1.0..1.0f32));
            truth.push((i % 3) as u32);
        }
        (Tensor::from_data(TensorData::new(values, [150, 2]), device), truth)
    }

    #[test]
    fn kmeans_recovers_well_separated_blobs_and_silhouette_prefers_their_number() {
        let device = Device::flex();
        let (x, truth) = blobs(&device);
        let c = kmeans(&x, 3, 4, 7).unwrap();
        // The same partition up to relabelling: each true blob maps to one segment.
        for blob in 0..3 {
            let labels: std::collections::HashSet<u32> = truth.iter().zip(&c.assignment).filter(|(t, _)| **t == blob).map(|(_, a)| *a).collect();
            assert_eq!(labels.len(), 1, "blob {blob} split across segments {labels:?}");
        }
        assert!(c.inertia < 150.0 * 2.0, "tight blobs: {}", c.inertia);
        let scores: Vec<f64> = (2..=5).map(|k| silhouette(&x, &kmeans(&x, k, 4, 7).unwrap(), 1000, 1)).collect();
        let best = scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 + 2;
        assert_eq!(best, 3, "silhouettes for k = 2..5: {scores:?}");
        assert!(scores[1] > 0.8, "{scores:?}");
        assert!(kmeans(&x, 200, 1, 7).is_err());
    }

    #[test]
    fn pca_finds_the_direction_of_spread() {
        let device = Device::flex();
        // Points along the line y = 2x, with a little noise.
        let values: Vec<f32> = (0..50).flat_map(|i| [i as f32, 2.0 * i as f32 + (i % 3) as f32 * 0.01]).collect();
        let points = pca_2d(&Tensor::from_data(TensorData::new(values, [50, 2]), &device)).unwrap();
        let spread = |f: fn(&(f64, f64)) -> f64| points.iter().map(f).map(|v| v * v).sum::<f64>();
        assert!(spread(|p| p.0) > 1000.0 * spread(|p| p.1), "the first component carries the line");
    }
}
