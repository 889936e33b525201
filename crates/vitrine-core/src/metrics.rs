//! Classification metrics from a confusion matrix.

use serde::Serialize;

/// Counts of (true class, predicted class).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfusionMatrix {
    /// `counts[truth][predicted]`.
    pub counts: Vec<Vec<u64>>,
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassScores {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        Self { counts: vec![vec![0; classes]; classes] }
    }

    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        ratio(correct, self.total())
    }

    /// Per-class scores; a class never predicted has precision 0 (as scikit-learn reports it).
    pub fn per_class(&self, classes: &[String]) -> Vec<ClassScores> {
        let n = self.counts.len();
        (0..n)
            .map(|c| {
                let tp = self.counts[c][c];
                let predicted: u64 = (0..n).map(|t| self.counts[t][c]).sum();
                let support: u64 = self.counts[c].iter().sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassScores { class: classes[c].clone(), precision, recall, f1, support }
            })
            .collect()
    }

    /// Unweighted mean of per-class F1 over the classes present in the data.
    pub fn macro_f1(&self, classes: &[String]) -> f64 {
        let scores: Vec<f64> = self.per_class(classes).iter().filter(|s| s.support > 0).map(|s| s.f1).collect();
        if scores.is_empty() { 0.0 } else { scores.iter().sum::<f64>() / scores.len() as f64 }
    }

    /// The matrix as an aligned text table, rows = truth, columns = prediction.
    pub fn to_table(&self, classes: &[String]) -> String {
        let width = classes.iter().map(|c| c.len()).max().unwrap_or(1).max(6);
        let cell = self.counts.iter().flatten().map(|v| v.to_string().len()).max().unwrap_or(1).max(4);
        let mut out = format!("{:>width$} │", "truth↓");
        for (i, _) in classes.iter().enumerate() {
            out += &format!(" {:>cell$}", i);
        }
        out += "\n";
        for (i, row) in self.counts.iter().enumerate() {
            out += &format!("{:>width$} │", classes[i]);
            for v in row {
                out += &format!(" {v:>cell$}");
            }
            out += &format!("   ({i})\n");
        }
        out
    }
}

/// The largest `|a − b|` over two slices of one length, NaN where either holds a NaN: a check
/// against a tolerance then fails, where a fold with `f32::max` would skip the NaN.
pub fn largest_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "largest_gap: slices of different lengths");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |worst, gap| if gap.is_nan() || gap > worst { gap } else { worst })
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative (ties count half). `None` when either class is absent.
pub fn auroc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann-Whitney U from average ranks, so tied scores share their rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += (i..=j).filter(|&k| positive[order[k]]).count() as f64 * average_rank;
        i = j + 1;
    }
    let pos = positive.iter().filter(|&&p| p).count() as f64;
    let neg = positive.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_a_hand_computed_case() {
        // truth/pred: a→a ×3, a→b ×1, b→b ×2, c→a ×1 (c never predicted).
        let mut m = ConfusionMatrix::new(3);
        for (t, p) in [(0, 0), (0, 0), (0, 0), (0, 1), (1, 1), (1, 1), (2, 0)] {
            m.add(t, p);
        }
        let classes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert!((m.accuracy() - 5.0 / 7.0).abs() < 1e-12);
        let s = m.per_class(&classes);
        assert!((s[0].precision - 0.75).abs() < 1e-12 && (s[0].recall - 0.75).abs() < 1e-12);
        assert!((s[1].precision - 2.0 / 3.0).abs() < 1e-12 && s[1].recall == 1.0);
        assert_eq!((s[2].precision, s[2].recall, s[2].f1), (0.0, 0.0, 0.0));
        let f1_b = 2.0 * (2.0 / 3.0) / (2.0 / 3.0 + 1.0);
        assert!((m.macro_f1(&classes) - (0.75 + f1_b + 0.0) / 3.0).abs() < 1e-12);
        assert!(m.to_table(&classes).lines().count() == 4);
    }

    #[test]
    fn auroc_counts_ordered_pairs_and_half_ties() {
        assert_eq!(auroc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]), Some(0.75));
        assert_eq!(auroc(&[0.9, 0.8, 0.1], &[true, true, false]), Some(1.0));
        assert_eq!(auroc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auroc(&[0.2, 0.3], &[true, true]), None);
    }
}
