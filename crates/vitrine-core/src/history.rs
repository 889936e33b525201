//! The record of each epoch, what early stopping watches, and the files made from the record:
//! `metrics.csv` and the curves.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::plot::{Series, line_chart};
use crate::run_dir::RunDir;

/// One row of `metrics.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: Option<f64>,
    pub valid_loss: f64,
    pub valid_accuracy: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
    pub samples_per_sec: f64,
    /// Further losses, by name with their pass (`train_g_loss`, `valid_g_loss`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub losses: BTreeMap<String, f64>,
    /// What the task measured after the epoch (`frechet`, `ndcg@10`), each with its direction.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<String, Score>,
}

/// A score of one epoch and which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub value: f64,
    pub higher_is_better: bool,
}

/// What early stopping and `restore_best` watch.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Monitor {
    /// The validation loss (classifiers, autoencoders).
    #[default]
    ValidLoss,
    /// A score the task measures after each epoch (a recommender's validation MRR@10).
    Score(String),
}

impl Monitor {
    /// The monitored figure of `record`, turned so that lower is better; `None` when the record
    /// lacks it.
    pub fn lower_is_better(&self, record: &EpochRecord) -> Option<f64> {
        match self {
            Self::ValidLoss => Some(record.valid_loss),
            Self::Score(name) => record.scores.get(name).map(|s| if s.higher_is_better { -s.value } else { s.value }),
        }
    }

    /// Words for the log, e.g. `validation loss`.
    pub fn describe(&self) -> String {
        match self {
            Self::ValidLoss => "validation loss".into(),
            Self::Score(name) => format!("validation {name}"),
        }
    }

    /// The epoch of `history` best by this figure.
    pub fn best_epoch(&self, history: &[EpochRecord]) -> Option<usize> {
        history.iter().filter_map(|r| Some((self.lower_is_better(r)?, r.epoch))).min_by(|a, b| a.0.total_cmp(&b.0)).map(|(_, epoch)| epoch)
    }
}

impl EpochRecord {
    /// Every further figure of the record by name, losses and scores together.
    fn figure(&self, name: &str) -> Option<f64> {
        self.losses.get(name).copied().or_else(|| self.scores.get(name).map(|s| s.value))
    }
}

/// The names of the further losses and of the scores in `history`, each sorted.
pub fn figure_names(history: &[EpochRecord]) -> (Vec<&str>, Vec<&str>) {
    let losses: BTreeSet<&str> = history.iter().flat_map(|r| r.losses.keys().map(String::as_str)).collect();
    let scores: BTreeSet<&str> = history.iter().flat_map(|r| r.scores.keys().map(String::as_str)).collect();
    (losses.into_iter().collect(), scores.into_iter().collect())
}

/// Rewrites `metrics.csv` and the curves from the whole history.
pub fn write_metrics(run: &RunDir, history: &[EpochRecord]) -> Result<()> {
    let (loss_names, score_names) = figure_names(history);
    let extra: Vec<&str> = loss_names.iter().chain(&score_names).copied().collect();
    let mut csv = String::from("epoch,train_loss,train_accuracy,valid_loss,valid_accuracy,lr,seconds,samples_per_sec");
    for key in &extra {
        csv += &format!(",{key}");
    }
    csv.push('\n');
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    for r in history {
        let cells: String = extra.iter().map(|k| format!(",{}", opt(r.figure(k)))).collect();
        csv += &format!(
            "{},{:.6},{},{:.6},{},{:e},{:.3},{:.1}{cells}\n",
            r.epoch,
            r.train_loss,
            opt(r.train_accuracy),
            r.valid_loss,
            opt(r.valid_accuracy),
            r.lr,
            r.seconds,
            r.samples_per_sec
        );
    }
    run.write("metrics.csv", csv)?;
    let points = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> { history.iter().filter_map(|r| f(r).map(|v| (r.epoch as f64, v))).collect() };
    let mut losses = vec![Series { name: "train", points: points(&|r| Some(r.train_loss)) }, Series { name: "valid", points: points(&|r| Some(r.valid_loss)) }];
    for key in &loss_names {
        losses.push(Series { name: key, points: points(&|r| r.losses.get(*key).copied()) });
    }
    line_chart(&run.file("loss.png"), "Loss", "loss", &losses)?;
    for key in &score_names {
        let series = [Series { name: key, points: points(&|r| r.scores.get(*key).map(|s| s.value)) }];
        line_chart(&run.file(&format!("{key}.png")), key, key, &series)?;
    }
    if history.iter().any(|r| r.train_accuracy.is_some()) {
        line_chart(
            &run.file("accuracy.png"),
            "Accuracy",
            "accuracy",
            &[Series { name: "train", points: points(&|r| r.train_accuracy) }, Series { name: "valid", points: points(&|r| r.valid_accuracy) }],
        )?;
    }
    Ok(())
}
