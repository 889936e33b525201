//! Using a trained recommender: recommendations for one customer or for all of them (streamed to
//! a CSV), similar items, evaluation on held-out interactions, and export.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use serde::Serialize;
use vitrine_core::config::ConfigFile;
use vitrine_core::export::{WeightsFormat, export_weights, load_weights};
use vitrine_core::family::UseContext;
use vitrine_core::reporter::Reporter;
use vitrine_core::run_dir::{CONFIG_FILE, RunDir, WEIGHTS_FILE};

use crate::config::{Architecture, RecommendConfig, TASK, resolve};
use crate::data::{
    COLD_FILE, ITEMS_FILE, IdMap, Interaction, RecData, SPLIT_FILES, USERS_FILE, read_features, read_interactions, read_split, seen_items, sequences,
};
use crate::metrics::RankingScores;
use crate::model::build::Build;
use crate::model::counted::{ItemKnn, Popularity};
use crate::model::factorization::{MatrixFactorization, NeuMf};
use crate::model::sasrec::Sasrec;
use crate::model::two_tower::TwoTower;
use crate::model::{Ranker, ScoreContext};
use crate::ranking::{self, RankRequest};
use crate::training::score_context;

/// A trained recommendation run: its config, ID maps, split, features and model.
pub struct RecommendRun {
    pub run: RunDir,
    pub config: RecommendConfig,
    pub data: RecData,
    model: LoadedModel,
}

/// The trained model, of whichever architecture.
enum LoadedModel {
    Pop(Popularity),
    ItemKnn(ItemKnn),
    BprMf(MatrixFactorization),
    Neumf(NeuMf),
    TwoTower(TwoTower),
    Sasrec(Sasrec),
}

impl LoadedModel {
    fn ranker(&self) -> &dyn Ranker {
        match self {
            Self::Pop(m) => m,
            Self::ItemKnn(m) => m,
            Self::BprMf(m) => m,
            Self::Neumf(m) => m,
            Self::TwoTower(m) => m,
            Self::Sasrec(m) => m,
        }
    }

    fn export(&self, format: WeightsFormat, out: &Path, metadata: &[(&str, String)]) -> Result<()> {
        match self {
            Self::Pop(m) => export_weights(m, format, out, metadata),
            Self::ItemKnn(m) => export_weights(m, format, out, metadata),
            Self::BprMf(m) => export_weights(m, format, out, metadata),
            Self::Neumf(m) => export_weights(m, format, out, metadata),
            Self::TwoTower(m) => export_weights(m, format, out, metadata),
            Self::Sasrec(m) => export_weights(m, format, out, metadata),
        }
    }
}

fn load<M: Build + ModuleSnapshot>(run: &RunDir, config: &RecommendConfig, data: &RecData, device: &Device) -> Result<M> {
    let model = M::build(config, data, device)?;
    Ok(load_weights(model, &run.file(WEIGHTS_FILE), config.model.name.name())?.valid())
}

impl RecommendRun {
    /// Opens a finished run folder; other families' runs are a clear error.
    pub fn open(path: &Path, device: &Device, reporter: &dyn Reporter) -> Result<Self> {
        let run = RunDir::open(path)?;
        let file = ConfigFile::read(&run.file(CONFIG_FILE))?;
        if file.task() != TASK {
            bail!("{} is a `{}` run, not a recommender", path.display(), file.task());
        }
        Self::open_with(run, &file, device, reporter)
    }

    /// Opens a finished run whose saved config is `file`.
    pub fn open_with(run: RunDir, file: &ConfigFile, device: &Device, reporter: &dyn Reporter) -> Result<Self> {
        run.trained_classes()?;
        let config = resolve(file, &[])?;
        let data = run_data(&run, &config, reporter)?;
        let model = match config.model.name {
            Architecture::Pop => LoadedModel::Pop(load(&run, &config, &data, device)?),
            Architecture::ItemKnn => LoadedModel::ItemKnn(load(&run, &config, &data, device)?),
            Architecture::BprMf => LoadedModel::BprMf(load(&run, &config, &data, device)?),
            Architecture::Neumf => LoadedModel::Neumf(load(&run, &config, &data, device)?),
            Architecture::TwoTower => LoadedModel::TwoTower(load(&run, &config, &data, device)?),
            Architecture::Sasrec => LoadedModel::Sasrec(load(&run, &config, &data, device)?),
        };
        Ok(Self { run, config, data, model })
    }

    pub fn ranker(&self) -> &dyn Ranker {
        self.model.ranker()
    }

    /// Every interaction the run knows (train, validation, test and cold-start), oldest first
    /// per customer: what a customer "already has" when serving.
    pub fn everything(&self) -> Vec<Interaction> {
        let d = &self.data;
        d.train.iter().chain(&d.valid).chain(&d.test).chain(&d.cold).copied().collect()
    }

    /// The scoring context for serving: each customer's whole known history.
    pub fn serving_context(&self, device: &Device) -> ScoreContext {
        let users = self.data.users.len();
        score_context(&self.data, Arc::new(sequences(&self.everything(), users)), device)
    }

    /// The display name of an item: its name from the item file, else its ID.
    pub fn item_label(&self, item: u32) -> String {
        let id = self.data.items.id(item);
        match self.data.item_features.as_ref().and_then(|f| f.names.as_ref()).map(|n| n[item as usize].as_str()) {
            Some(name) if !name.is_empty() => format!("{id}  {name}"),
            _ => id.to_string(),
        }
    }

    fn user_index(&self, id: &str) -> Result<u32> {
        self.data.users.get(id).with_context(|| {
            format!("unknown customer `{id}`: {} has {} customers, e.g. `{}`", self.run.root().display(), self.data.users.len(), self.data.users.id(0))
        })
    }

    fn item_index(&self, id: &str) -> Result<u32> {
        self.data.items.get(id).with_context(|| {
            format!("unknown item `{id}`: {} has {} items, e.g. `{}`", self.run.root().display(), self.data.items.len(), self.data.items.id(0))
        })
    }
}

/// The ID maps, split and features of a run, read back from its folder (features from the
/// configured files).
fn run_data(run: &RunDir, config: &RecommendConfig, reporter: &dyn Reporter) -> Result<RecData> {
    let ids = |file: &str| -> Result<IdMap> {
        let list: Vec<String> = serde_json::from_str(&run.read_to_string(file)?).with_context(|| format!("parsing {}", run.file(file).display()))?;
        Ok(IdMap::from_ids(list))
    };
    let (users, items) = (ids(USERS_FILE)?, ids(ITEMS_FILE)?);
    let i = &config.data.interactions;
    let part = |file: &str| read_split(run, file, &users, &items, &i.user, &i.item);
    let (train, valid, test, cold) = (part(SPLIT_FILES[0])?, part(SPLIT_FILES[1])?, part(SPLIT_FILES[2])?, part(COLD_FILE)?);
    let mut cold_items: Vec<u32> = cold.iter().map(|r| r.item).collect::<HashSet<_>>().into_iter().collect();
    cold_items.sort_unstable();
    let needs_features = config.model.name == Architecture::TwoTower;
    let features = |source: &Option<crate::config::FeatureSource>, map: &IdMap, what: &str| -> Result<Option<crate::data::Features>> {
        let Some(source) = source else { return Ok(None) };
        let mut grown = map.clone();
        match read_features(source, &mut grown, false) {
            Ok(read) => {
                let mut f = read.features;
                f.extend_to(grown.len());
                f.tokens.truncate(map.len());
                f.numbers.truncate(map.len());
                if let Some(names) = &mut f.names {
                    names.truncate(map.len());
                }
                Ok(Some(f))
            }
            Err(e) if needs_features => Err(e.context(format!("data.{what}: the two-tower model reads its features"))),
            Err(e) => {
                reporter.warn(&format!("data.{what}: {e:#} (showing IDs only)"));
                Ok(None)
            }
        }
    };
    let item_features = features(&config.data.items, &items, "items")?;
    let user_features = features(&config.data.users, &users, "users")?;
    Ok(RecData { users, items, train, valid, test, cold, cold_items, item_features, user_features, notes: Vec::new() })
}

/// One recommended item.
#[derive(Debug, Clone, Serialize)]
pub struct Recommended {
    pub item: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub rank: usize,
}

/// A customer's recommendations.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendations {
    pub user: String,
    pub items: Vec<Recommended>,
}

impl RecommendRun {
    fn recommended(&self, items: &[u32]) -> Vec<Recommended> {
        let names = self.data.item_features.as_ref().and_then(|f| f.names.as_ref());
        items
            .iter()
            .enumerate()
            .map(|(r, &i)| Recommended {
                item: self.data.items.id(i).to_string(),
                name: names.map(|n| n[i as usize].clone()).filter(|n| !n.is_empty()),
                rank: r + 1,
            })
            .collect()
    }

    /// The top `k` items for each customer of `user_ids`, leaving out what they already have.
    pub fn recommend(&self, user_ids: &[String], k: usize, device: &Device) -> Result<Vec<Recommendations>> {
        let users: Vec<u32> = user_ids.iter().map(|id| self.user_index(id)).collect::<Result<_>>()?;
        let context = self.serving_context(device);
        let exclude = seen_items(&self.everything(), self.data.users.len());
        let mut out = Vec::new();
        ranking::rank(self.ranker(), &users, &context, RankRequest { k, exclude: Some(&exclude), candidates: None }, device, |u, items| {
            out.push(Recommendations { user: self.data.users.id(u).to_string(), items: self.recommended(&items) });
            Ok(())
        })?;
        Ok(out)
    }

    /// Writes the top `k` items of every customer to `out` as CSV (`user,rank,item[,name]`),
    /// a batch of customers at a time; returns how many customers were written.
    pub fn recommend_all(&self, k: usize, out: &Path, device: &Device, reporter: &dyn Reporter) -> Result<usize> {
        let context = self.serving_context(device);
        let exclude = seen_items(&self.everything(), self.data.users.len());
        let users: Vec<u32> = (0..self.data.users.len() as u32).collect();
        let names = self.data.item_features.as_ref().and_then(|f| f.names.as_ref());
        vitrine_core::run_dir::save_atomic(out, |tmp| {
            let file = std::fs::File::create(tmp).with_context(|| format!("writing {}", out.display()))?;
            let mut writer = csv::Writer::from_writer(std::io::BufWriter::new(file));
            let mut header = vec!["user", "rank", "item"];
            if names.is_some() {
                header.push("name");
            }
            writer.write_record(&header)?;
            let bar = reporter.progress("recommending", users.len());
            let mut done = 0;
            ranking::rank(self.ranker(), &users, &context, RankRequest { k, exclude: Some(&exclude), candidates: None }, device, |u, items| {
                for (r, &i) in items.iter().enumerate() {
                    let (rank, item) = ((r + 1).to_string(), self.data.items.id(i));
                    let mut row = vec![self.data.users.id(u), rank.as_str(), item];
                    if let Some(names) = names {
                        row.push(&names[i as usize]);
                    }
                    writer.write_record(&row)?;
                }
                done += 1;
                bar.set(done);
                Ok(())
            })?;
            bar.finish();
            writer.into_inner().map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?.flush()?;
            Ok(())
        })?;
        Ok(users.len())
    }

    /// The `k` items most similar to `item_id`.
    pub fn similar(&self, item_id: &str, k: usize, device: &Device) -> Result<Vec<Recommended>> {
        let item = self.item_index(item_id)?;
        let context = self.serving_context(device);
        let Some(similarity) = self.ranker().similar_items(item, &context) else {
            bail!(
                "{} has no item similarity (pop ranks by popularity alone): use an item-knn, bpr-mf, neumf, two-tower or sasrec run",
                self.config.model.name.name()
            );
        };
        let n = similarity.dims()[0];
        let own = Tensor::<1>::zeros([n], device).select_assign(
            0,
            crate::model::index_tensor(&[item], device),
            Tensor::full([1], -1e30, device),
            burn::tensor::IndexingUpdateOp::Add,
        );
        let (_, top) = (similarity + own).topk_with_indices(k.min(n.saturating_sub(1)).max(1), 0);
        let top: Vec<u32> =
            top.into_data().convert::<i64>().try_into_vec::<i64>().expect("int indices").into_iter().map(|i| i as u32).filter(|&i| i != item).collect();
        Ok(self.recommended(&top))
    }

    /// Ranking metrics on held-out interactions from `path` (the run's column names), leaving
    /// out each customer's training and validation items, as the run's own test was scored (its
    /// `split-test.csv` scores the same). Unknown customers and items are skipped and counted.
    pub fn evaluate(&self, path: &Path, cutoffs: &[usize], ctx: &UseContext) -> Result<(RankingScores, usize)> {
        let mut source = self.config.data.interactions.clone();
        source.file = path.to_path_buf();
        source.rating = None;
        source.timestamp = None;
        // Read through copies of the ID maps: IDs the run has never seen are reported, not added.
        let (mut users, mut items) = (self.data.users.clone(), self.data.items.clone());
        let read = read_interactions(&source, &mut users, &mut items, false, None, None, ctx.strict || self.config.run.strict)?;
        for row in read.skipped.iter().take(5) {
            ctx.reporter.info(&format!("data: skipped {row}"));
        }
        let (known_users, known_items) = (self.data.users.len() as u32, self.data.items.len() as u32);
        let held_out: Vec<Interaction> = read.rows.iter().copied().filter(|r| r.user < known_users && r.item < known_items).collect();
        let unknown = read.rows.len() - held_out.len();
        if held_out.is_empty() {
            bail!("{}: none of its interactions is between a customer and an item the run knows", path.display());
        }
        let device = ctx.device();
        let exclude = crate::training::excluded(&self.data, &crate::training::test_history(&self.data), self.config.eval_settings().exclude_seen);
        let history = crate::training::scoring_history(&self.data, &self.config);
        let context = score_context(&self.data, Arc::new(sequences(&history, self.data.users.len())), device);
        let counts = crate::data::item_counts(&self.data.train, self.data.items.len());
        let scores = ranking::evaluate(self.ranker(), &context, &held_out, &exclude, cutoffs, &counts, None, device)?;
        Ok((scores, unknown))
    }

    /// Writes the model's weights; safetensors files carry the ID maps' sizes and the architecture.
    pub fn export(&self, format: WeightsFormat, out: &Path) -> Result<()> {
        let metadata = [
            ("architecture", self.config.model.name.name().to_string()),
            ("users", self.data.users.len().to_string()),
            ("items", self.data.items.len().to_string()),
            ("users_file", USERS_FILE.to_string()),
            ("items_file", ITEMS_FILE.to_string()),
        ];
        self.model.export(format, out, &metadata)
    }

    /// Where a run's files are, for commands that print paths.
    pub fn file(&self, name: &str) -> PathBuf {
        self.run.file(name)
    }
}
