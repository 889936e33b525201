//! The classical baseline every text run is set beside: TF-IDF character 1–3-grams and logistic
//! regression, fitted as `scripts/text-baseline.py` fits them with scikit-learn (lower-cased text,
//! runs of white space as one space, sublinear tf, smooth idf, rows of unit length, n-grams seen in
//! at least 2 training texts, C = 10, L-BFGS), so that no network is reported without it.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, anyhow, ensure};
use argmin::core::{CostFunction, Error, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use serde::{Deserialize, Serialize};

/// How the baseline is described in logs and reports.
pub const BASELINE: &str = "TF-IDF character 1–3-grams + logistic regression";

const NGRAMS: std::ops::RangeInclusive<usize> = 1..=3;
const MIN_DF: usize = 2;
const C: f64 = 10.0;
const MAX_ITERATIONS: u64 = 1000;

/// The file a run blending its model with the baseline keeps the fitted baseline in.
pub const BASELINE_FILE: &str = "baseline.json";

/// A fitted baseline: the vocabulary with its idf weights and the regression's weights.
#[derive(Serialize, Deserialize)]
pub struct ClassicalBaseline {
    vocabulary: HashMap<String, u32>,
    idf: Vec<f64>,
    /// `outputs × (features + 1)`, the intercept last in each row.
    weights: Vec<f64>,
    /// 1 for two classes (one logistic output, as scikit-learn fits them), else one per class.
    outputs: usize,
}

impl ClassicalBaseline {
    /// Fits the baseline on labelled texts (`labels` index `0..classes`).
    pub fn fit(texts: &[&str], labels: &[u32], classes: usize) -> Result<Self> {
        ensure!(texts.len() == labels.len() && !texts.is_empty(), "the baseline needs labelled texts");
        ensure!(classes >= 2, "the baseline needs at least two classes");
        let mut document_frequency: HashMap<String, usize> = HashMap::new();
        for text in texts {
            let mut seen: Vec<String> = char_ngrams(text).into_keys().collect();
            seen.sort_unstable();
            for gram in seen {
                *document_frequency.entry(gram).or_default() += 1;
            }
        }
        let mut kept: Vec<(String, usize)> = document_frequency.into_iter().filter(|(_, df)| *df >= MIN_DF).collect();
        kept.sort_unstable();
        let n = texts.len() as f64;
        let idf = kept.iter().map(|(_, df)| ((1.0 + n) / (1.0 + *df as f64)).ln() + 1.0).collect();
        let vocabulary = kept.into_iter().enumerate().map(|(i, (gram, _))| (gram, i as u32)).collect();
        let mut baseline = Self { vocabulary, idf, weights: Vec::new(), outputs: if classes == 2 { 1 } else { classes } };
        let rows: Vec<Row> = texts.iter().map(|t| baseline.features(t)).collect();
        let problem = Regression { rows: &rows, labels, outputs: baseline.outputs, width: baseline.idf.len() + 1 };
        let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10).with_tolerance_grad(1e-6).map_err(|e| anyhow!("{e}"))?;
        let start = vec![0.0; problem.outputs * problem.width];
        let result = Executor::new(problem, solver)
            .configure(|state| state.param(start).max_iters(MAX_ITERATIONS))
            .run()
            .map_err(|e| anyhow!("fitting the classical baseline: {e}"))?;
        baseline.weights = result.state().get_best_param().cloned().ok_or_else(|| anyhow!("the baseline's fit returned no weights"))?;
        Ok(baseline)
    }

    /// The predicted class of one text.
    pub fn predict(&self, text: &str) -> u32 {
        vitrine_core::classifier::argmax(&self.probabilities(text)) as u32
    }

    /// The class probabilities of one text.
    pub fn probabilities(&self, text: &str) -> Vec<f32> {
        let z = scores(&self.features(text), &self.weights, self.outputs, self.idf.len() + 1);
        if self.outputs == 1 {
            let p = sigmoid(z[0]) as f32;
            return vec![1.0 - p, p];
        }
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|s| (s - max).exp()).sum();
        z.iter().map(|s| ((s - max).exp() / sum) as f32).collect()
    }

    /// Writes the fitted baseline as JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(self)?;
        vitrine_core::run_dir::save_atomic(path, |tmp| Ok(std::fs::write(tmp, &json)?))
    }

    /// Reads a baseline written by [`ClassicalBaseline::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| anyhow!("{}: not a saved baseline ({e})", path.display()))
    }

    /// The share of `texts` whose predicted class is their label.
    pub fn accuracy(&self, texts: &[&str], labels: &[u32]) -> f64 {
        let right = texts.iter().zip(labels).filter(|(t, l)| self.predict(t) == **l).count();
        right as f64 / texts.len().max(1) as f64
    }

    /// The TF-IDF row of one text: (feature, weight), of unit length.
    fn features(&self, text: &str) -> Row {
        let mut row: Row = char_ngrams(text)
            .into_iter()
            .filter_map(|(gram, tf)| self.vocabulary.get(&gram).map(|&i| (i, (1.0 + (tf as f64).ln()) * self.idf[i as usize])))
            .collect();
        let norm = row.iter().map(|(_, v)| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|(_, v)| *v /= norm);
        }
        row
    }
}

type Row = Vec<(u32, f64)>;

/// Each character n-gram of the lower-cased text (white space runs read as one space) and its count.
fn char_ngrams(text: &str) -> HashMap<String, usize> {
    let lower = text.to_lowercase();
    let chars: Vec<char> = lower.split_whitespace().collect::<Vec<_>>().join(" ").chars().collect();
    let mut counts = HashMap::new();
    for n in NGRAMS {
        for gram in chars.windows(n) {
            *counts.entry(gram.iter().collect::<String>()).or_default() += 1;
        }
    }
    counts
}

/// The `outputs` scores of one row under `weights` (`outputs × width`, intercept last).
fn scores(row: &Row, weights: &[f64], outputs: usize, width: usize) -> Vec<f64> {
    (0..outputs)
        .map(|k| {
            let w = &weights[k * width..(k + 1) * width];
            w[width - 1] + row.iter().map(|&(i, v)| w[i as usize] * v).sum::<f64>()
        })
        .collect()
}

/// Mean log-loss plus `‖w‖² / (2·C·n)` (intercepts unpenalised): scikit-learn's objective.
struct Regression<'a> {
    rows: &'a [Row],
    labels: &'a [u32],
    outputs: usize,
    width: usize,
}

impl Regression<'_> {
    /// The objective and, when asked for, its gradient.
    fn evaluate(&self, weights: &[f64], gradient: Option<&mut Vec<f64>>) -> f64 {
        let n = self.rows.len() as f64;
        let mut loss = 0.0;
        let mut grad = gradient.map(|g| {
            g.clear();
            g.resize(weights.len(), 0.0);
            g
        });
        for (row, &label) in self.rows.iter().zip(self.labels) {
            let z = scores(row, weights, self.outputs, self.width);
            // d loss / d z for each output.
            let dz: Vec<f64> = if self.outputs == 1 {
                let t = f64::from(label);
                loss += softplus(z[0]) - t * z[0];
                vec![sigmoid(z[0]) - t]
            } else {
                let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = z.iter().map(|s| (s - max).exp()).sum();
                loss += max + sum.ln() - z[label as usize];
                z.iter().enumerate().map(|(k, s)| (s - max).exp() / sum - f64::from(k == label as usize)).collect()
            };
            if let Some(g) = grad.as_deref_mut() {
                for (k, d) in dz.into_iter().enumerate() {
                    let g = &mut g[k * self.width..(k + 1) * self.width];
                    for &(i, v) in row {
                        g[i as usize] += d * v / n;
                    }
                    g[self.width - 1] += d / n;
                }
            }
        }
        let penalty = 1.0 / (C * n);
        let mut objective = loss / n;
        for k in 0..self.outputs {
            let w = &weights[k * self.width..(k + 1) * self.width - 1];
            objective += 0.5 * penalty * w.iter().map(|x| x * x).sum::<f64>();
            if let Some(g) = grad.as_deref_mut() {
                for (gi, wi) in g[k * self.width..(k + 1) * self.width - 1].iter_mut().zip(w) {
                    *gi += penalty * wi;
                }
            }
        }
        objective
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

impl CostFunction for Regression<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, weights: &Vec<f64>) -> Result<f64, Error> {
        Ok(self.evaluate(weights, None))
    }
}

impl Gradient for Regression<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, weights: &Vec<f64>) -> Result<Vec<f64>, Error> {
        let mut gradient = Vec::new();
        self.evaluate(weights, Some(&mut gradient));
        Ok(gradient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_ngrams_count_like_scikit_learn() {
        let grams = char_ngrams("Ab  a");
        // "ab a": 4 unigrams (a twice, b, space), 3 bigrams, 2 trigrams.
        assert_eq!(grams["a"], 2);
        assert_eq!(grams["ab"], 1);
        assert_eq!(grams["b a"], 1);
        assert_eq!(grams.values().sum::<usize>(), 4 + 3 + 2);
    }

    #[test]
    fn the_baseline_learns_words_it_has_seen_and_not_chance() {
        let good = ["great phone", "love this camera", "great battery", "love it", "works great", "love the screen"];
        let bad = ["awful phone", "hate this camera", "awful battery", "hate it", "broke awful", "hate the screen"];
        let texts: Vec<&str> = good.iter().chain(&bad).copied().collect();
        let labels: Vec<u32> = (0..12).map(|i| u32::from(i >= 6)).collect();
        let baseline = ClassicalBaseline::fit(&texts, &labels, 2).unwrap();
        assert_eq!(baseline.accuracy(&texts, &labels), 1.0);
        assert_eq!(baseline.accuracy(&["great screen", "awful screen"], &[0, 1]), 1.0);
        let p = baseline.probabilities("great screen");
        assert!((p[0] + p[1] - 1.0).abs() < 1e-6 && p[0] > 0.5, "{p:?}");
        let tmp = tempfile::tempdir().unwrap();
        baseline.save(&tmp.path().join(BASELINE_FILE)).unwrap();
        assert_eq!(ClassicalBaseline::load(&tmp.path().join(BASELINE_FILE)).unwrap().probabilities("great screen"), p);
        let three: Vec<u32> = (0..12).map(|i| (i % 3) as u32).collect();
        assert!(ClassicalBaseline::fit(&texts, &three, 3).unwrap().accuracy(&texts, &three) > 0.9, "three classes fit their own training texts");
    }
}
