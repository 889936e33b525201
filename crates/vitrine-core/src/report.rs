//! The run report (Markdown for people, JSON for machines) and evaluation summaries.

use anyhow::Result;
use serde::Serialize;

use crate::data::ImageSplits;
use crate::history::{EpochRecord, figure_names};
use crate::metrics::{ClassScores, ConfusionMatrix};
use crate::run_dir::RunDir;

/// Scores of a classifier on labelled data.
#[derive(Debug, Clone, Serialize)]
pub struct ClassificationScores {
    pub examples: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Area under the ROC curve of the second class's probability (two-class tasks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auroc: Option<f64>,
    pub per_class: Vec<ClassScores>,
    pub confusion: ConfusionMatrix,
}

impl ClassificationScores {
    pub fn new(confusion: ConfusionMatrix, classes: &[String]) -> Self {
        Self {
            examples: confusion.total(),
            accuracy: confusion.accuracy(),
            macro_f1: confusion.macro_f1(classes),
            auroc: None,
            per_class: confusion.per_class(classes),
            confusion,
        }
    }

    /// A human-readable summary: headline figures, per-class table, confusion matrix.
    pub fn to_text(&self, classes: &[String]) -> String {
        let mut out = format!(
            "examples {}  accuracy {:.2}%  macro-F1 {:.4}{}\n\n{:>16}  precision  recall     f1  support\n",
            self.examples,
            100.0 * self.accuracy,
            self.macro_f1,
            self.auroc.map(|a| format!("  AUROC {a:.4}")).unwrap_or_default(),
            "class"
        );
        for s in &self.per_class {
            out += &format!("{:>16}  {:>9.4}  {:>6.4}  {:>5.4}  {:>7}\n", s.class, s.precision, s.recall, s.f1, s.support);
        }
        out += "\nconfusion matrix (rows: truth, columns: prediction)\n";
        out += &self.confusion.to_table(classes);
        out
    }
}

/// Sizes of the data a run used.
#[derive(Debug, Clone, Serialize)]
pub struct DataSummary {
    pub train: usize,
    pub valid: usize,
    pub test: Option<usize>,
    pub classes: Vec<String>,
    /// What loaders skipped, one line per source.
    pub skipped: Vec<String>,
}

/// Everything a finished (or stopped) run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub task: String,
    pub model: String,
    pub parameters: usize,
    pub device: String,
    pub data: DataSummary,
    pub epochs: Vec<EpochRecord>,
    pub stopped_early: bool,
    /// The epoch whose weights the run kept, when `train.restore_best` chose an earlier one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_epoch: Option<usize>,
    /// What picked the best epoch and early stopping watched (`validation loss`, `validation mrr@10`).
    pub selected_by: String,
    pub train_seconds: f64,
    pub test: Option<ClassificationScores>,
    /// Held-out scores of models that do not classify (e.g. an autoencoder's test MSE, PSNR).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_out: Vec<(String, f64)>,
    /// Images of the run folder to show in the report: (caption, file name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<(String, String)>,
}

impl DataSummary {
    /// The sizes of a run's image data.
    pub fn of_images(data: &ImageSplits) -> Self {
        Self {
            train: data.train.len(),
            valid: data.valid.len(),
            test: data.test.as_ref().map(|t| t.len()),
            classes: data.train.classes.clone(),
            skipped: data.skipped.clone(),
        }
    }
}

impl RunReport {
    /// Writes `report.json` and `report.md` into the run.
    pub fn write(&self, run: &RunDir) -> Result<()> {
        run.write("report.json", serde_json::to_string_pretty(self)?)?;
        run.write("report.md", self.to_markdown())?;
        Ok(())
    }

    fn to_markdown(&self) -> String {
        let classes = match self.data.classes.len() {
            0 => String::new(),
            n => format!(", {n} classes"),
        };
        let mut md = format!(
            "# Run report: {} ({})\n\n- model: `{}`, {} parameters\n- device: {}\n- data: {} train / {} valid{} examples{classes}\n",
            self.model,
            self.task,
            self.model,
            self.parameters,
            self.device,
            self.data.train,
            self.data.valid,
            self.data.test.map(|t| format!(" / {t} test")).unwrap_or_default(),
        );
        for line in &self.data.skipped {
            md += &format!("- {line}\n");
        }
        if let Some(epoch) = self.restored_epoch {
            md += &format!("- weights: those of epoch {epoch}, the best {} (train.restore_best)\n", self.selected_by);
        }
        let (loss_names, score_names) = figure_names(&self.epochs);
        let accuracy = self.epochs.iter().any(|r| r.train_accuracy.is_some());
        // Columns: name and value of each epoch; accuracy only for tasks that have it.
        let mut columns: Vec<(String, Box<dyn Fn(&EpochRecord) -> String>)> = Vec::new();
        let pct = |v: Option<f64>| v.map(|v| format!("{:.2}%", 100.0 * v)).unwrap_or_else(|| "-".into());
        columns.push(("train loss".into(), Box::new(|r| format!("{:.4}", r.train_loss))));
        if accuracy {
            columns.push(("train acc".into(), Box::new(move |r| pct(r.train_accuracy))));
        }
        columns.push(("valid loss".into(), Box::new(|r| format!("{:.4}", r.valid_loss))));
        if accuracy {
            columns.push(("valid acc".into(), Box::new(move |r| pct(r.valid_accuracy))));
        }
        for key in &loss_names {
            let key = key.to_string();
            columns.push((key.clone(), Box::new(move |r| r.losses.get(&key).map_or("-".into(), |v| format!("{v:.4}")))));
        }
        for key in &score_names {
            let key = key.to_string();
            columns.push((key.clone(), Box::new(move |r| r.scores.get(&key).map_or("-".into(), |s| format!("{:.4}", s.value)))));
        }
        columns.push(("lr".into(), Box::new(|r| format!("{:.2e}", r.lr))));
        columns.push(("seconds".into(), Box::new(|r| format!("{:.1}", r.seconds))));
        columns.push(("samples/s".into(), Box::new(|r| format!("{:.0}", r.samples_per_sec))));
        md += &format!(
            "- training: {} epoch(s){}, {:.1} s\n\n## Epochs\n\n| epoch | {} |\n|---|{}\n",
            self.epochs.len(),
            if self.stopped_early { " (stopped early)" } else { "" },
            self.train_seconds,
            columns.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(" | "),
            "---|".repeat(columns.len())
        );
        for r in &self.epochs {
            let cells: Vec<String> = columns.iter().map(|(_, cell)| cell(r)).collect();
            md += &format!("| {} | {} |\n", r.epoch, cells.join(" | "));
        }
        md += "\n![loss](loss.png)";
        if accuracy {
            md += " ![accuracy](accuracy.png)";
        }
        for key in &score_names {
            md += &format!(" ![{key}]({key}.png)");
        }
        md.push('\n');
        if !self.held_out.is_empty() {
            md += "\n## Held-out data\n\n";
            for (name, value) in &self.held_out {
                md += &format!("- {name}: {value:.5}\n");
            }
        }
        for (caption, file) in &self.figures {
            md += &format!("\n{caption}\n\n![{caption}]({file})\n");
        }
        if let Some(test) = &self.test {
            md += &format!("\n## Test set\n\n```\n{}```\n\n![confusion matrix](confusion.png)\n", test.to_text(&self.data.classes));
        }
        md
    }
}
