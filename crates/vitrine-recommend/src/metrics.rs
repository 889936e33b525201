//! Ranking metrics as RecBole computes them (full ranking, each customer's known items excluded):
//! Recall, NDCG, MRR, Hit and Precision at each cut-off, averaged over customers with at least
//! one held-out item, plus item coverage and the share of recommendations among the most
//! popular items.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

/// Sums of the per-customer metrics over the customers scored so far.
#[derive(Debug, Clone)]
pub struct RankingMetrics {
    cutoffs: Vec<usize>,
    sums: Vec<[f64; 5]>,
    users: usize,
    /// Items recommended in anyone's top `max cut-off`.
    recommended: HashSet<u32>,
    recommendations: u64,
    popular_recommendations: u64,
    /// The 10% most popular items (by training interactions).
    popular: HashSet<u32>,
    items: usize,
}

/// The averaged metrics at one cut-off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AtK {
    pub recall: f64,
    pub ndcg: f64,
    pub mrr: f64,
    pub hit: f64,
    pub precision: f64,
}

/// Every metric of a ranking evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankingScores {
    pub users: usize,
    /// The metrics at each cut-off, e.g. `10 → {recall, ndcg, ...}`.
    pub at: BTreeMap<usize, AtK>,
    /// The share of the catalogue that appears in some customer's top `max k`.
    pub coverage: f64,
    /// The share of recommended items that are among the 10% most popular.
    pub popular_share: f64,
}

impl RankingMetrics {
    /// `counts`: training interactions per item (to find the most popular 10%).
    pub fn new(cutoffs: &[usize], counts: &[u64]) -> Self {
        let mut by_count: Vec<u32> = (0..counts.len() as u32).collect();
        by_count.sort_by_key(|&i| std::cmp::Reverse(counts[i as usize]));
        let popular = by_count.into_iter().take(counts.len().div_ceil(10)).collect();
        let mut cutoffs = cutoffs.to_vec();
        cutoffs.sort_unstable();
        cutoffs.dedup();
        Self {
            sums: vec![[0.0; 5]; cutoffs.len()],
            cutoffs,
            users: 0,
            recommended: HashSet::new(),
            recommendations: 0,
            popular_recommendations: 0,
            popular,
            items: counts.len(),
        }
    }

    /// The longest list a customer needs ranked.
    pub fn max_k(&self) -> usize {
        *self.cutoffs.last().expect("at least one cut-off")
    }

    /// Adds one customer: `ranked` is their top `max_k` items, best first; `relevant` their
    /// held-out items. Customers without held-out items are not counted.
    pub fn add(&mut self, ranked: &[u32], relevant: &HashSet<u32>) {
        if relevant.is_empty() {
            return;
        }
        self.users += 1;
        let top = &ranked[..ranked.len().min(self.max_k())];
        self.recommended.extend(top.iter().copied());
        self.recommendations += top.len() as u64;
        self.popular_recommendations += top.iter().filter(|i| self.popular.contains(i)).count() as u64;
        for (c, &k) in self.cutoffs.iter().enumerate() {
            let mut hits = 0usize;
            let mut dcg = 0.0;
            let mut first_hit = None;
            for (rank, item) in ranked.iter().take(k).enumerate() {
                if relevant.contains(item) {
                    hits += 1;
                    dcg += 1.0 / (rank as f64 + 2.0).log2();
                    first_hit.get_or_insert(rank + 1);
                }
            }
            let ideal: f64 = (0..relevant.len().min(k)).map(|r| 1.0 / (r as f64 + 2.0).log2()).sum();
            let s = &mut self.sums[c];
            s[0] += hits as f64 / relevant.len() as f64;
            s[1] += dcg / ideal;
            s[2] += first_hit.map_or(0.0, |r| 1.0 / r as f64);
            s[3] += f64::from(u8::from(hits > 0));
            s[4] += hits as f64 / k as f64;
        }
    }

    pub fn scores(&self) -> RankingScores {
        let n = self.users.max(1) as f64;
        let at = self
            .cutoffs
            .iter()
            .zip(&self.sums)
            .map(|(&k, s)| (k, AtK { recall: s[0] / n, ndcg: s[1] / n, mrr: s[2] / n, hit: s[3] / n, precision: s[4] / n }))
            .collect();
        RankingScores {
            users: self.users,
            at,
            coverage: self.recommended.len() as f64 / self.items.max(1) as f64,
            popular_share: self.popular_recommendations as f64 / self.recommendations.max(1) as f64,
        }
    }
}

impl RankingScores {
    /// A metric by RecBole's name, e.g. `mrr@10`, `ndcg@20`; `None` for an unknown name or cut-off.
    pub fn get(&self, name: &str) -> Option<f64> {
        let (metric, k) = name.split_once('@')?;
        let at = self.at.get(&k.parse().ok()?)?;
        Some(match metric.to_ascii_lowercase().as_str() {
            "recall" => at.recall,
            "ndcg" => at.ndcg,
            "mrr" => at.mrr,
            "hit" => at.hit,
            "precision" => at.precision,
            _ => return None,
        })
    }

    /// The figures as `(name, value)` pairs, e.g. `("ndcg@10", 0.29)`.
    pub fn named(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for (k, at) in &self.at {
            for (name, v) in [("recall", at.recall), ("ndcg", at.ndcg), ("mrr", at.mrr), ("hit", at.hit), ("precision", at.precision)] {
                out.push((format!("{name}@{k}"), v));
            }
        }
        out.push(("coverage".into(), self.coverage));
        out.push(("popular_share".into(), self.popular_share));
        out
    }

    /// A table for people: one row per cut-off.
    pub fn to_text(&self) -> String {
        let mut out = format!("customers {}\n\n     k   recall     ndcg      mrr      hit  precision\n", self.users);
        for (k, a) in &self.at {
            out += &format!("{k:>6}  {:>7.4}  {:>7.4}  {:>7.4}  {:>7.4}  {:>9.4}\n", a.recall, a.ndcg, a.mrr, a.hit, a.precision);
        }
        out += &format!(
            "\nitem coverage {:.1}% of the catalogue; {:.1}% of recommendations are among the 10% most popular items\n",
            100.0 * self.coverage,
            100.0 * self.popular_share
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[u32]) -> HashSet<u32> {
        items.iter().copied().collect()
    }

    #[test]
    fn metrics_match_hand_computed_rankings() {
        // Ten items; item i was bought 10 - i times, so item 0 is "the most popular 10%".
        let counts: Vec<u64> = (0..10).map(|i| 10 - i).collect();
        let mut m = RankingMetrics::new(&[3, 1], &counts);
        // Customer A: relevant {2, 7}; ranked 5, 2, 9 → one hit at rank 2.
        m.add(&[5, 2, 9], &set(&[2, 7]));
        // Customer B: relevant {0}; ranked 0 first.
        m.add(&[0, 4, 1], &set(&[0]));
        // Customer C: no held-out items: not counted.
        m.add(&[3, 3, 3], &set(&[]));
        let s = m.scores();
        assert_eq!(s.users, 2);
        let at3 = s.at[&3];
        let ndcg_a = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((at3.recall - (0.5 + 1.0) / 2.0).abs() < 1e-12);
        assert!((at3.ndcg - (ndcg_a + 1.0) / 2.0).abs() < 1e-12);
        assert!((at3.mrr - (0.5 + 1.0) / 2.0).abs() < 1e-12);
        assert!((at3.hit - 1.0).abs() < 1e-12);
        assert!((at3.precision - (1.0 / 3.0 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
        let at1 = s.at[&1];
        assert_eq!((at1.recall, at1.ndcg, at1.mrr, at1.hit, at1.precision), (0.5, 0.5, 0.5, 0.5, 0.5));
        assert!((s.coverage - 6.0 / 10.0).abs() < 1e-12, "items 5, 2, 9, 0, 4, 1");
        assert!((s.popular_share - 1.0 / 6.0).abs() < 1e-12);
        assert_eq!(s.get("mrr@3"), Some(at3.mrr));
        assert_eq!(s.get("mrr@5"), None);
    }
}
