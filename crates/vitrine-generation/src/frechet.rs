//! The Fréchet distance between two sets of feature vectors, each summarised by a Gaussian:
//! `|μa − μb|² + Tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½)` — FID's formula, in the feature space of a
//! Vitrine classifier trained on the same domain instead of Inception's.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Mean and covariance of a set of feature vectors.
#[derive(Debug, Clone)]
pub struct FeatureStats {
    pub mean: DVector<f64>,
    pub covariance: DMatrix<f64>,
    pub count: usize,
}

impl FeatureStats {
    /// `rows` holds `rows.len() / dim` vectors of `dim` features, one after another.
    pub fn from_rows(rows: &[f32], dim: usize) -> Self {
        let count = rows.len() / dim;
        assert!(count >= 2, "a covariance needs at least two vectors");
        let data = DMatrix::from_row_iterator(count, dim, rows.iter().map(|&v| v as f64));
        let mean = data.row_mean().transpose();
        let mut centred = data;
        for mut row in centred.row_iter_mut() {
            row -= mean.transpose();
        }
        let covariance = centred.transpose() * &centred / (count - 1) as f64;
        Self { mean, covariance, count }
    }
}

/// The Fréchet distance between the Gaussians of `a` and `b` (≥ 0; 0 for identical sets; NaN
/// if the eigen-decompositions fail, never a silent 0).
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> f64 {
    // Features constant in both sets (ReLU units no sample switches on: most of a small
    // classifier's) add nothing to the trace terms, and their zero rows and columns can make
    // nalgebra's symmetric eigen-solver return garbage, so the trace terms skip them.
    let live: Vec<usize> = (0..a.mean.len()).filter(|&i| a.covariance[(i, i)] > 0.0 || b.covariance[(i, i)] > 0.0).collect();
    let restrict = |m: &DMatrix<f64>| m.select_rows(&live).select_columns(&live);
    let (cov_a, cov_b) = (restrict(&a.covariance), restrict(&b.covariance));
    let root_a = psd_sqrt(&cov_a);
    let product = &root_a * &cov_b * &root_a;
    let symmetric = (&product + product.transpose()) * 0.5;
    let trace_root: f64 = SymmetricEigen::new(symmetric).eigenvalues.iter().map(|v| v.max(0.0).sqrt()).sum();
    let distance = (&a.mean - &b.mean).norm_squared() + cov_a.trace() + cov_b.trace() - 2.0 * trace_root;
    if distance.is_finite() { distance.max(0.0) } else { f64::NAN }
}

/// The square root of a symmetric positive semi-definite matrix (negative round-off clipped).
fn psd_sqrt(m: &DMatrix<f64>) -> DMatrix<f64> {
    let eigen = SymmetricEigen::new(m.clone());
    let roots = eigen.eigenvalues.map(|v| v.max(0.0).sqrt());
    &eigen.eigenvectors * DMatrix::from_diagonal(&roots) * eigen.eigenvectors.transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// `n` vectors of `dim` standard-normal features, times `scale`, plus `shift`.
    fn gaussian(n: usize, dim: usize, scale: f32, shift: f32, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n * dim)
            .map(|_| {
                // Box–Muller.
                let (u, v): (f32, f32) = (rng.random::<f32>().max(1e-7), rng.random());
                (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos() * scale + shift
            })
            .collect()
    }

    #[test]
    fn matches_known_answers() {
        let dim = 8;
        let a = FeatureStats::from_rows(&gaussian(4000, dim, 1.0, 0.0, 1), dim);
        assert!(frechet_distance(&a, &a) < 1e-6, "identical sets: {}", frechet_distance(&a, &a));
        // Shifting every feature by 1 adds |shift|² = dim.
        let shifted = FeatureStats::from_rows(&gaussian(4000, dim, 1.0, 1.0, 1), dim);
        assert!((frechet_distance(&a, &shifted) - dim as f64).abs() < 1e-6);
        // Two samples of the same Gaussian are close; N(0, I) vs N(0, 4I) is dim · (2 − 1)².
        let other = FeatureStats::from_rows(&gaussian(4000, dim, 1.0, 0.0, 2), dim);
        let wider = FeatureStats::from_rows(&gaussian(4000, dim, 2.0, 0.0, 3), dim);
        let same = frechet_distance(&a, &other);
        let d = frechet_distance(&a, &wider);
        assert!(same < 0.1, "two samples of one Gaussian: {same}");
        assert!((d - dim as f64).abs() < 0.5, "N(0,1) vs N(0,4) in {dim} dims: {d}");
        assert!((frechet_distance(&wider, &a) - d).abs() < 1e-6, "symmetric");
    }

    /// Fewer samples than features (as when scoring 128 samples in a 256-wide feature space):
    /// the covariances are singular. A shift by 1 still adds exactly `dim`.
    #[test]
    fn stays_exact_when_the_covariances_are_singular() {
        let dim = 256;
        for (n, seed) in [(128, 1), (100, 2), (250, 3)] {
            // Features after a ReLU, as a classifier's penultimate layer gives: many exact zeros,
            // and units that no sample switches on (every third one here).
            let rows: Vec<f32> =
                gaussian(n, dim, 1.0, 0.0, seed).into_iter().enumerate().map(|(i, v)| if i % dim % 3 == 0 { 0.0 } else { v.max(0.0) }).collect();
            let shifted: Vec<f32> = rows.iter().map(|v| v + 1.0).collect();
            let (a, b) = (FeatureStats::from_rows(&rows, dim), FeatureStats::from_rows(&shifted, dim));
            let d = frechet_distance(&a, &b);
            assert!((d - dim as f64).abs() < 1e-3, "{n} samples in {dim} dimensions: {d}");
            assert!(frechet_distance(&a, &a) < 1e-3);
        }
    }
}
