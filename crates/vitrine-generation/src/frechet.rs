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

/// The Fréchet distance between the Gaussians of `a` and `b` (≥ 0; 0 for identical sets).
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> f64 {
    let root_a = psd_sqrt(&a.covariance);
    let product = &root_a * &b.covariance * &root_a;
    let symmetric = (&product + product.transpose()) * 0.5;
    let trace_root: f64 = SymmetricEigen::new(symmetric).eigenvalues.iter().map(|v| v.max(0.0).sqrt()).sum();
    let distance = (&a.mean - &b.mean).norm_squared() + a.covariance.trace() + b.covariance.trace() - 2.0 * trace_root;
    distance.max(0.0)
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
}
