//! The recommendation family's config: where interactions (and item and user features) come
//! from, how they are split, which recommender to train, and how it is scored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use vitrine_core::config::{ConfigFile, DataConfig, ExperimentConfig, ModelSection};
use vitrine_core::data::Table;

/// The `task` value of recommendation configs.
pub const TASK: &str = "recommendation";

/// A whole recommendation experiment.
pub type RecommendConfig = ExperimentConfig<RecommendDataSection, RecommendModelConfig>;

/// Reads a recommendation config with its model's defaults and `--set` overrides, and checks it.
pub fn resolve(file: &ConfigFile, overrides: &[String]) -> Result<RecommendConfig> {
    let config = RecommendConfig::from_file(file, overrides)?;
    check(&config).with_context(|| format!("in config {}", file.path.display()))?;
    Ok(config)
}

fn check(config: &RecommendConfig) -> Result<()> {
    let (m, d) = (&config.model, &config.data);
    ensure!(m.embedding_dim > 0, "model.embedding_dim must be at least 1");
    ensure!((0.0..1.0).contains(&m.dropout), "model.dropout must be in [0, 1), got {}", m.dropout);
    ensure!(m.negatives >= 1, "model.negatives must be at least 1");
    let sequential = m.name == Architecture::Sasrec;
    match (sequential, d.split.kind) {
        (true, SplitKind::Random) => {
            bail!("sasrec learns from sequences: set data.split.kind = \"leave-one-out\" (the last item of each customer is the test)")
        }
        (_, SplitKind::LeaveOneOut) if d.interactions.timestamp.is_none() => {
            bail!("data.split.kind = \"leave-one-out\" orders each customer's interactions by time: set data.interactions.timestamp")
        }
        _ => {}
    }
    if m.name == Architecture::Sasrec {
        ensure!(m.max_len >= 2, "model.max_len must be at least 2");
        ensure!(m.heads > 0 && m.embedding_dim % m.heads == 0, "model.embedding_dim ({}) must be a multiple of model.heads ({})", m.embedding_dim, m.heads);
    }
    if m.sparse_updates {
        ensure!(m.name == Architecture::BprMf, "model.sparse_updates applies to bpr-mf only");
        ensure!(
            config.train.optimizer.kind == vitrine_core::config::OptimizerKind::Adam,
            "model.sparse_updates steps with row-wise Adam: leave train.optimizer.kind at \"adam\""
        );
        ensure!(config.train.grad_clip_norm.is_none(), "model.sparse_updates does not clip gradients: remove train.grad_clip_norm");
    }
    if m.full_softmax || m.item_bias {
        ensure!(m.name == Architecture::TwoTower, "model.full_softmax and model.item_bias apply to two-tower only");
        ensure!(!m.full_softmax || m.extra_negatives == 0, "model.full_softmax scores every item: leave model.extra_negatives at 0");
    }
    if m.name == Architecture::TwoTower && d.items.is_none() && d.users.is_none() {
        bail!("two-tower is the hybrid recommender: give data.items and/or data.users feature files (without them, use bpr-mf)");
    }
    let eval = config.eval_settings();
    ensure!(!eval.k.is_empty() && eval.k.iter().all(|&k| k > 0), "eval.k must list cut-offs of at least 1, e.g. [10, 20]");
    ensure!((0.0..0.5).contains(&eval.cold_start_items), "eval.cold_start_items is a fraction below 0.5, got {}", eval.cold_start_items);
    Ok(())
}

/// Where interactions and features come from, and how they are split.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendDataSection {
    pub interactions: InteractionSource,
    /// Item features, joined on the item ID: categories, genres, numbers, titles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<FeatureSource>,
    /// Customer features, joined on the user ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<FeatureSource>,
    /// Explicit ratings become implicit feedback: only interactions rated at least this count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implicit_threshold: Option<f64>,
    #[serde(default)]
    pub split: SplitConfig,
    /// Use only the first N interactions of the file (quick experiments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// An interactions file (CSV, TSV, JSON Lines or RecBole `.inter`) and its columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionSource {
    pub file: PathBuf,
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default = "default_item")]
    pub item: String,
    /// A rating or weight column (needed for `implicit_threshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<String>,
    /// A time column: unix seconds, or ISO-8601 dates such as `2024-05-01` or `2024-05-01 14:03:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

fn default_user() -> String {
    "user_id".into()
}

fn default_item() -> String {
    "item_id".into()
}

/// A feature file joined on an ID column, and how to read its other columns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSource {
    pub file: PathBuf,
    /// The ID column, matching the interactions' user or item column.
    pub id: String,
    /// A human-readable name shown by `vitrine recommend` and `similar` (a title, a product name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Columns with one category each (`brand`, `gender`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categorical: Vec<String>,
    /// Columns holding several categories, each with its separator: `{ genres = "|" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub multi: BTreeMap<String, String>,
    /// Numeric columns (price, age), standardised; a missing value reads as the mean.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numeric: Vec<String>,
    /// Free-text columns (titles, descriptions): their lower-cased words become features.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text: Vec<String>,
    /// A column of texts read by a trained Vitrine text run: its pooled vectors become features
    /// (`{ run = "runs/reviews-csv", column = "description" }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_run: Option<RunColumn>,
    /// A column of photo paths read by a trained Vitrine image run: its penultimate-layer vectors
    /// become features (`{ run = "runs/resnet-small", column = "photo" }`; paths relative to the file's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_run: Option<RunColumn>,
}

/// A column whose values a trained Vitrine run turns into vectors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunColumn {
    pub run: PathBuf,
    pub column: String,
}

/// How interactions are split into train, validation and test.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitConfig {
    pub kind: SplitKind,
    /// `random`: the share of each customer's interactions held out for validation and for test.
    pub valid: f64,
    pub test: f64,
    /// `files`: the validation and test interactions, in files with the same columns as
    /// `data.interactions.file`, which then holds the training ones (RecBole's `benchmark_filename`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_file: Option<PathBuf>,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self { kind: SplitKind::Random, valid: 0.1, test: 0.1, valid_file: None, test_file: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitKind {
    /// Per customer, a seeded random share (RecBole's `RS` with `group_by: user`).
    Random,
    /// Per customer by time: the last interaction is the test, the one before it validation.
    LeaveOneOut,
    /// A split made elsewhere: training, validation and test interactions in three files.
    Files,
}

impl DataConfig for RecommendDataSection {
    fn check(&self) -> Result<()> {
        Table::new(&self.interactions.file).context("data.interactions.file")?;
        for (name, source) in [("items", &self.items), ("users", &self.users)] {
            if let Some(source) = source {
                Table::new(&source.file).with_context(|| format!("data.{name}.file"))?;
            }
        }
        if self.implicit_threshold.is_some() && self.interactions.rating.is_none() {
            bail!("data.implicit_threshold needs the rating column: set data.interactions.rating");
        }
        let s = &self.split;
        match (s.kind, &s.valid_file, &s.test_file) {
            (SplitKind::Files, Some(valid), Some(test)) => {
                Table::new(valid).context("data.split.valid_file")?;
                Table::new(test).context("data.split.test_file")?;
            }
            (SplitKind::Files, _, _) => bail!(
                "data.split.kind = \"files\" needs data.split.valid_file and data.split.test_file (data.interactions.file holds the training interactions)"
            ),
            (_, None, None) => {}
            _ => bail!("data.split.valid_file and data.split.test_file go with data.split.kind = \"files\""),
        }
        if s.kind == SplitKind::Random && !(s.valid >= 0.0 && s.test > 0.0 && s.valid + s.test < 0.9) {
            bail!("data.split.valid and data.split.test must be shares that leave most to train (got {} and {})", s.valid, s.test);
        }
        Ok(())
    }
}

/// Which recommender to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// Most popular items first: the baseline every recommender must beat.
    #[serde(rename = "pop")]
    Pop,
    /// Item-based collaborative filtering: cosine similarity over the interaction matrix, top-k neighbours.
    #[serde(rename = "item-knn")]
    ItemKnn,
    /// Matrix factorisation trained with the BPR loss and sampled negatives.
    #[serde(rename = "bpr-mf")]
    BprMf,
    /// Neural collaborative filtering: a GMF and an MLP tower.
    #[serde(rename = "neumf")]
    Neumf,
    /// The hybrid: user and item towers over IDs and features, in-batch sampled softmax.
    #[serde(rename = "two-tower")]
    TwoTower,
    /// Self-attentive sequential recommendation: a causal Transformer over recent items.
    #[serde(rename = "sasrec")]
    Sasrec,
}

impl Architecture {
    pub const ALL: [Architecture; 6] = [Self::Pop, Self::ItemKnn, Self::BprMf, Self::Neumf, Self::TwoTower, Self::Sasrec];

    pub fn name(self) -> &'static str {
        match self {
            Self::Pop => "pop",
            Self::ItemKnn => "item-knn",
            Self::BprMf => "bpr-mf",
            Self::Neumf => "neumf",
            Self::TwoTower => "two-tower",
            Self::Sasrec => "sasrec",
        }
    }

    /// Whether the model is counted in one pass (no gradient, no epochs to speak of).
    pub fn is_counted(self) -> bool {
        matches!(self, Self::Pop | Self::ItemKnn)
    }
}

/// The `[model]` section of a recommendation config; defaults follow RecBole's recipes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecommendModelConfig {
    pub name: Architecture,
    /// Size of user and item embeddings (`bpr-mf`, `two-tower`, `sasrec`; NeuMF's GMF and MLP).
    pub embedding_dim: usize,
    /// `item-knn`: neighbours kept per item.
    pub neighbours: usize,
    /// `neumf`: the MLP's hidden layers; `two-tower`: each tower's hidden layers.
    pub hidden: Vec<usize>,
    /// Dropout in `neumf`'s MLP, the towers and `sasrec`.
    pub dropout: f64,
    /// Sampled negatives per positive (`bpr-mf`, `neumf`).
    pub negatives: usize,
    /// `two-tower`: softmax temperature of in-batch scores.
    pub temperature: f64,
    /// `two-tower`: the chance that training hides an item's own ID embedding, so the tower also
    /// learns to place items from their features alone (what cold-start items have).
    pub id_dropout: f64,
    /// `two-tower`: uniformly drawn items added to each batch's negatives (0: in-batch only).
    pub extra_negatives: usize,
    /// `two-tower`: the item tower also gives each item a score offset (from its ID and
    /// features), for what unit-length vectors cannot hold, such as popularity.
    pub item_bias: bool,
    /// `two-tower`: each training step scores every item (the exact softmax) instead of the
    /// batch's items: for catalogues of up to some tens of thousands of items.
    pub full_softmax: bool,
    /// `bpr-mf`: each step updates only the embedding rows its batch uses, with row-wise Adam
    /// (PyTorch's `SparseAdam`): for catalogues of millions, where a dense step touches every row.
    pub sparse_updates: bool,
    /// `sasrec`: most recent items read, layers, heads, feed-forward width.
    pub max_len: usize,
    pub layers: usize,
    pub heads: usize,
    pub feed_forward: usize,
}

impl Default for RecommendModelConfig {
    fn default() -> Self {
        Self {
            name: Architecture::BprMf,
            embedding_dim: 64,
            neighbours: 100,
            hidden: vec![128, 64],
            dropout: 0.1,
            negatives: 1,
            temperature: 0.1,
            id_dropout: 0.3,
            extra_negatives: 0,
            item_bias: false,
            full_softmax: false,
            sparse_updates: false,
            max_len: 50,
            layers: 2,
            heads: 2,
            feed_forward: 256,
        }
    }
}

/// How recommendations are scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecommendEval {
    /// Cut-offs of the ranking metrics.
    pub k: Vec<usize>,
    /// The validation figure that picks the best epoch and stops training (RecBole's `MRR@10`).
    pub monitor: String,
    /// `two-tower`: the share of items (with features) whose every interaction is held out of
    /// training, to measure recommending items nobody has bought yet.
    pub cold_start_items: f64,
    /// Leave each customer's known items out of their ranking (RecBole does for general models;
    /// for sequential ones it ranks every item, as repeat purchases can be the next item).
    pub exclude_seen: bool,
}

impl Default for RecommendEval {
    fn default() -> Self {
        Self { k: vec![10], monitor: "mrr@10".into(), cold_start_items: 0.0, exclude_seen: true }
    }
}

impl ModelSection for RecommendModelConfig {
    type Eval = RecommendEval;
    const TAKES_EVAL_SECTION: bool = true;

    /// RecBole's recipes: Adam 1e-3, batch 2048, up to 300 epochs stopped 10 epochs after the
    /// best validation MRR@10, whose weights are kept (`bpr-mf` with L2 1e-5 too).
    fn defaults(model: Option<&str>) -> &'static [&'static str] {
        const TRAINED: &[&str] = &["train.epochs=300", "train.batch_size=2048", "train.early_stopping.patience=10", "train.restore_best=true"];
        // BPR with a little L2 (Rendle et al. 2009 regularise; RecBole's default has none):
        // on RecBole's own ml-100k split 0.2865 → 0.2979 test NDCG@10, RecBole's BPR at the same
        // 1e-5 0.2928 → 0.3021.
        const BPR: &[&str] = &[
            "model.name=\"bpr-mf\"",
            "train.optimizer.weight_decay=1e-5",
            "train.epochs=300",
            "train.batch_size=2048",
            "train.early_stopping.patience=10",
            "train.restore_best=true",
        ];
        // NeuMF with the paper's four sampled negatives per positive (He et al. 2017, §4.1);
        // RecBole's one negative ends some 0.02 NDCG@10 lower on MovieLens-100K.
        const NEUMF: &[&str] =
            &["model.negatives=4", "train.epochs=300", "train.batch_size=2048", "train.early_stopping.patience=10", "train.restore_best=true"];
        // The two towers' validation MRR@10 climbs for 50+ epochs under ±0.01 of noise from
        // epoch to epoch: stopped after 10 without a new best, runs ended anywhere in 0.28–0.31
        // test NDCG@10 on RecBole's ml-100k split; after 30, in 0.300–0.312 (three seeds each).
        const TWO_TOWER: &[&str] = &["train.epochs=300", "train.batch_size=2048", "train.early_stopping.patience=30", "train.restore_best=true"];
        match model {
            Some("pop") | Some("item-knn") => &["train.epochs=1", "train.batch_size=1024"],
            Some("two-tower") => TWO_TOWER,
            None | Some("bpr-mf") => BPR,
            Some("neumf") => NEUMF,
            Some("sasrec") => {
                &["train.epochs=200", "train.batch_size=256", "train.early_stopping.patience=10", "train.restore_best=true", "eval.exclude_seen=false"]
            }
            _ => TRAINED,
        }
    }
}
