//! Training a recommender: what this family does its own way in the shared recipe. One task
//! trains every model (by gradient, or by counting for the baselines) and ranks the validation
//! split after each epoch; the recipe keeps the epoch with the best validation MRR@10.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use vitrine_core::backend::on_compute_pool;
use vitrine_core::config::Settings;

use vitrine_core::report::{DataSummary, RunReport};
use vitrine_core::run_dir::RunDir;
use vitrine_core::train::{
    Batches, Built, FitOutcome, HeldOut, Metric, Monitor, PassTotals, Recipe, StepStats, TrainContext, TrainTask, build_optimizer, load_module, load_optimizer,
    recipe, save_module, save_optimizer, sum_steps,
};

use crate::config::{Architecture, RecommendConfig, TASK};
use crate::data::batches::{InteractionBatches, RecBatch};
use crate::data::{Interaction, RecData, item_counts, load_data, save_split, seen_items, sequences};
use crate::metrics::RankingScores;
use crate::model::build::Build;
use crate::model::counted::{ItemKnn, Popularity};
use crate::model::factorization::{MatrixFactorization, NeuMf};
use crate::model::sasrec::Sasrec;
use crate::model::sparse::RowAdam;
use crate::model::two_tower::TwoTower;
use crate::model::{Ranker, Recommender, ScoreContext};
use crate::ranking;

/// Trains the configured recommender into `ctx.run`, continuing from its last checkpoint when resuming.
pub fn train(config: &RecommendConfig, ctx: &TrainContext) -> Result<RunReport> {
    match config.model.name {
        Architecture::Pop => recipe::train(&RecommendRecipe::<Popularity>::new(config), ctx),
        Architecture::ItemKnn => recipe::train(&RecommendRecipe::<ItemKnn>::new(config), ctx),
        Architecture::BprMf => recipe::train(&RecommendRecipe::<MatrixFactorization>::new(config), ctx),
        Architecture::Neumf => recipe::train(&RecommendRecipe::<NeuMf>::new(config), ctx),
        Architecture::TwoTower => recipe::train(&RecommendRecipe::<TwoTower>::new(config), ctx),
        Architecture::Sasrec => recipe::train(&RecommendRecipe::<Sasrec>::new(config), ctx),
    }
}

/// A checkpoint's row-wise Adam moments (`model.sparse_updates`).
const ROW_ADAM_FILE: &str = "row-adam.bpk";

/// What ranking the validation split needs after each epoch.
pub struct Validation {
    context: ScoreContext,
    relevant: Vec<Interaction>,
    exclude: Arc<Vec<HashSet<u32>>>,
    cutoffs: Vec<usize>,
    counts: Vec<u64>,
    device: Device,
}

/// Any recommender with its optimizer (none for the counted ones).
pub struct RecommendTask<M: Recommender> {
    pub model: M,
    optimizer: Option<ModuleOptimizer>,
    /// With `model.sparse_updates`, the row-wise Adam that replaces the optimizer.
    row_adam: Option<RowAdam>,
    /// Features on the training device, for the loss.
    context: ScoreContext,
    /// Features on the plain device, for the validation loss.
    valid_context: ScoreContext,
    validation: Option<Validation>,
    /// A counted model is in the middle of its pass.
    counting: bool,
    train_device: Device,
}

impl<M: Recommender> RecommendTask<M> {
    /// A task for `model` on `train_device` (an optimizer unless the model is counted); without
    /// `validation`, epochs end without ranking (benchmarks).
    pub fn new(
        model: M,
        config: &RecommendConfig,
        context: ScoreContext,
        valid_context: ScoreContext,
        validation: Option<Validation>,
        train_device: &Device,
    ) -> Self {
        let sparse = config.model.sparse_updates;
        let optimizer = (!M::COUNTED && !sparse).then(|| build_optimizer(&config.train.optimizer, config.train.grad_clip_norm));
        let row_adam = sparse.then(|| RowAdam::new(&model.row_tables(), &config.train.optimizer, &train_device.clone().without_autodiff()));
        Self { model, optimizer, row_adam, context, valid_context, validation, counting: false, train_device: train_device.clone() }
    }
}

impl<M: Recommender + Clone> TrainTask for RecommendTask<M> {
    type Batch = RecBatch;
    const STEPS_ON_COMPUTE_POOL: bool = M::STEPS_ON_COMPUTE_POOL;

    fn train_step(&mut self, batch: RecBatch, lr: f64) -> StepStats {
        let count = batch.count();
        if M::COUNTED {
            if !self.counting {
                self.model = self.model.clone().reset();
                self.counting = true;
            }
            self.model = self.model.clone().count(batch);
            return StepStats::loss(Tensor::zeros([1], &self.train_device), count);
        }
        if let Some(adam) = self.row_adam.as_mut() {
            let loss = self.model.row_step(batch, lr, adam);
            return StepStats::loss(loss.mul_scalar(count as f32), count);
        }
        let loss = self.model.loss(batch, &self.context);
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let optimizer = self.optimizer.as_mut().expect("trained models have an optimizer");
        self.model = optimizer.step(lr, self.model.clone(), grads);
        StepStats::loss(loss.detach().mul_scalar(count as f32), count)
    }

    fn validate(&self, batches: &mut dyn Iterator<Item = RecBatch>) -> PassTotals {
        if M::COUNTED {
            return PassTotals::default();
        }
        let model = self.model.valid();
        sum_steps(batches.map(|batch| {
            let count = batch.count();
            let loss = || model.loss(batch, &self.valid_context).mul_scalar(count as f32);
            StepStats::loss(if M::STEPS_ON_COMPUTE_POOL { on_compute_pool(&self.train_device, loss) } else { loss() }, count)
        }))
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.save_weights(&dir.join("model.bpk"))?;
        if let Some(adam) = &self.row_adam {
            save_module(adam, &dir.join(ROW_ADAM_FILE))?;
        }
        match &self.optimizer {
            Some(_) => save_optimizer(&self.optimizer, &dir.join("optimizer.bpk")),
            None => Ok(()),
        }
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        self.load_weights(&dir.join("model.bpk"))?;
        if let Some(adam) = self.row_adam.take() {
            self.row_adam = Some(load_module(adam, &dir.join(ROW_ADAM_FILE))?);
        }
        match &self.optimizer {
            Some(_) => load_optimizer(&mut self.optimizer, &dir.join("optimizer.bpk")),
            None => Ok(()),
        }
    }

    fn save_weights(&self, path: &Path) -> Result<()> {
        save_module(&self.model, path)
    }

    fn load_weights(&mut self, path: &Path) -> Result<()> {
        self.model = load_module(self.model.clone(), path)?;
        Ok(())
    }

    fn end_epoch(&mut self, _epoch: usize, _run: &RunDir) -> Result<Vec<(Metric, f64)>> {
        if M::COUNTED && self.counting {
            self.model = self.model.clone().finish();
            self.counting = false;
        }
        let Some(v) = self.validation.as_ref().filter(|v| !v.relevant.is_empty()) else { return Ok(Vec::new()) };
        let scores = ranking::evaluate(&self.model.valid(), &v.context, &v.relevant, &v.exclude, &v.cutoffs, &v.counts, None, &v.device)?;
        Ok(scores.named().into_iter().filter(|(name, _)| name.contains('@')).map(|(name, value)| (Metric::higher_named(name), value)).collect())
    }
}

/// The scoring context of `data` on `device`, with `history` as each customer's known items.
pub fn score_context(data: &RecData, history: Arc<Vec<Vec<u32>>>, device: &Device) -> ScoreContext {
    let warm: Vec<f32> = {
        let cold: HashSet<u32> = data.cold_items.iter().copied().collect();
        (0..data.items.len() as u32).map(|i| if cold.contains(&i) { 0.0 } else { 1.0 }).collect()
    };
    let n = warm.len();
    let counts = item_counts(&data.train, n);
    let total = counts.iter().sum::<u64>().max(1) as f32;
    let log_frequency: Vec<f32> = counts.iter().map(|&c| ((c as f32 + 1.0) / total).ln()).collect();
    ScoreContext {
        history,
        items: data.items.len(),
        item_features: data.item_features.as_ref().map(|f| f.tensors(device)),
        user_features: data.user_features.as_ref().map(|f| f.tensors(device)),
        warm_items: Some(Tensor::from_data(TensorData::new(warm, [n]), device)),
        item_log_frequency: Some(Tensor::from_data(TensorData::new(log_frequency, [n]), device)),
    }
}

/// What is known of each customer when the test split is scored: training interactions, then
/// the validation ones (every model leaves them out of its rankings).
pub fn test_history(data: &RecData) -> Vec<Interaction> {
    data.train.iter().chain(&data.valid).copied().collect()
}

/// What a model reads of each customer's past when it scores the test split: the training
/// interactions, as RecBole's general models do (item-knn sums the neighbours of those items
/// alone), and the validation ones too for a sequence model, whose input is the customer's
/// latest items.
pub fn scoring_history(data: &RecData, config: &RecommendConfig) -> Vec<Interaction> {
    match config.model.name {
        Architecture::Sasrec => test_history(data),
        _ => data.train.clone(),
    }
}

struct RecommendRecipe<'a, M> {
    config: &'a RecommendConfig,
    _model: PhantomData<M>,
}

impl<'a, M> RecommendRecipe<'a, M> {
    fn new(config: &'a RecommendConfig) -> Self {
        Self { config, _model: PhantomData }
    }
}

impl<M: Build + Clone> Recipe for RecommendRecipe<'_, M> {
    type Data = RecData;
    type Task = RecommendTask<M>;

    fn task_name(&self) -> &'static str {
        TASK
    }

    fn settings(&self) -> &dyn Settings {
        self.config
    }

    fn load_data(&self, ctx: &TrainContext) -> Result<RecData> {
        let data = load_data(self.config, ctx.reporter)?;
        ctx.reporter.info(&format!(
            "data: {} customers, {} items; {} train / {} valid / {} test interactions",
            data.users.len(),
            data.items.len(),
            data.train.len(),
            data.valid.len(),
            data.test.len()
        ));
        Ok(data)
    }

    fn classes(&self, _data: &RecData) -> Vec<String> {
        Vec::new()
    }

    /// A new run keeps its ID maps and split; a resumed one checks it reads the same data.
    fn prepare(&self, data: &mut RecData, ctx: &TrainContext) -> Result<()> {
        let i = &self.config.data.interactions;
        if ctx.resuming {
            let saved: Vec<String> = serde_json::from_str(&ctx.run.read_to_string(crate::data::ITEMS_FILE)?)?;
            if saved != data.items.ids() {
                bail!("the interactions or item files changed since {} started: its items differ", ctx.run.root().display());
            }
            return Ok(());
        }
        save_split(ctx.run, data, &i.user, &i.item)
    }

    fn build(&self, data: &RecData, train_device: &Device, ctx: &TrainContext) -> Result<Built<RecommendTask<M>>> {
        let model = M::build(self.config, data, train_device)?;
        let parameters = model.num_params();
        let device = &ctx.compute.device;
        let history = Arc::new(sequences(&data.train, data.users.len()));
        let eval = self.config.eval_settings();
        let validation = Validation {
            context: score_context(data, history.clone(), device),
            relevant: data.valid.clone(),
            exclude: Arc::new(excluded(data, &data.train, eval.exclude_seen)),
            cutoffs: eval.k.clone(),
            counts: item_counts(&data.train, data.items.len()),
            device: device.clone(),
        };
        let (context, valid_context) = (score_context(data, history.clone(), train_device), score_context(data, history, device));
        let task = RecommendTask::new(model, self.config, context, valid_context, Some(validation), train_device);
        Ok(Built { task, description: self.config.model.name.name().into(), parameters })
    }

    fn batches(&self, data: &RecData, train_device: &Device, device: &Device) -> Result<(Batches<RecBatch>, Batches<RecBatch>)> {
        let kind = M::batch_kind(self.config);
        let (users, items) = (data.users.len(), data.items.len());
        // Training negatives are drawn among items the customer has not trained on (as RecBole
        // does); validation ones among items outside their training and validation items.
        let trained = Arc::new(seen_items(&data.train, users));
        let train_sequences = Arc::new(sequences(&data.train, users));
        let bs = self.config.train.batch_size;
        let train =
            InteractionBatches::new(kind, Arc::new(data.train.clone()), trained, train_sequences, items, bs, Some(self.config.run.seed), train_device.clone());
        // Validation sequences: the training items followed by the validation item, which alone is predicted.
        let history = test_history(data);
        let known = Arc::new(seen_items(&history, users));
        let valid_sequences = Arc::new(sequences(&history, users));
        let valid = InteractionBatches::new(kind, Arc::new(data.valid.clone()), known, valid_sequences, items, bs, None, device.clone());
        Ok((Box::new(train), Box::new(valid)))
    }

    fn monitor(&self) -> Monitor {
        Monitor::Score(self.config.eval_settings().monitor)
    }

    fn evaluate(&self, task: &RecommendTask<M>, data: &RecData, _outcome: &FitOutcome, ctx: &TrainContext) -> Result<HeldOut> {
        let eval = self.config.eval_settings();
        let device = &ctx.compute.device;
        let exclude = excluded(data, &test_history(data), eval.exclude_seen);
        let history = scoring_history(data, self.config);
        let context = score_context(data, Arc::new(sequences(&history, data.users.len())), device);
        let counts = item_counts(&data.train, data.items.len());
        let model = task.model.valid();
        let scores = ranking::evaluate(&model, &context, &data.test, &exclude, &eval.k, &counts, None, device)?;
        ctx.reporter.info(&format!("test: {}", summary(&scores)));
        let mut figures: Vec<(String, f64)> = scores.named().into_iter().map(|(n, v)| (format!("test {n}"), v)).collect();
        // The baseline on the same split: most popular items first.
        let popular = popularity_of(&counts, device);
        let baseline = ranking::evaluate(&popular, &context, &data.test, &exclude, &eval.k, &counts, None, device)?;
        ctx.reporter.info(&format!("test, popularity baseline: {}", summary(&baseline)));
        figures.extend(baseline.named().into_iter().filter(|(n, _)| n.contains('@')).map(|(n, v)| (format!("pop test {n}"), v)));
        if !data.cold.is_empty() {
            let cold = cold_start(&model, data, &context, &eval.k, &counts, device)?;
            ctx.reporter.info(&format!("cold start ({} new items): {}", data.cold_items.len(), summary(&cold)));
            figures.extend(cold.named().into_iter().filter(|(n, _)| n.contains('@')).map(|(n, v)| (format!("cold-start {n}"), v)));
            // Two baselines for new items: chance, and the content profile (each customer's
            // feature tokens against each new item's).
            let k = eval.k[0];
            let random = (k as f64 / data.cold_items.len() as f64).min(1.0);
            figures.push((format!("cold-start random recall@{k}"), random));
            if let Some(profile) = crate::model::content::ContentProfile::of(data, &history, device) {
                let content = cold_start(&profile, data, &context, &eval.k, &counts, device)?;
                ctx.reporter.info(&format!("cold start, content-profile baseline: {}", summary(&content)));
                figures.extend(content.named().into_iter().filter(|(n, _)| n.contains('@')).map(|(n, v)| (format!("cold-start content {n}"), v)));
            }
        }
        Ok(HeldOut { figures, ..HeldOut::default() })
    }

    fn data_summary(&self, data: &RecData) -> DataSummary {
        DataSummary { train: data.train.len(), valid: data.valid.len(), test: Some(data.test.len()), classes: Vec::new(), skipped: data.notes.clone() }
    }
}

/// What each customer's ranking leaves out: their items in `history` (or nothing), and the
/// cold-start items, which are scored in their own evaluation: every interaction with them is
/// held out, so here they could only be misses.
pub fn excluded(data: &RecData, history: &[Interaction], exclude_seen: bool) -> Vec<HashSet<u32>> {
    let mut sets = match exclude_seen {
        true => seen_items(history, data.users.len()),
        false => vec![HashSet::new(); data.users.len()],
    };
    if !data.cold_items.is_empty() {
        for set in &mut sets {
            set.extend(data.cold_items.iter().copied());
        }
    }
    sets
}

/// Ranks the cold-start items (never seen in training) for the customers who interacted with
/// them, among the cold-start items only.
pub fn cold_start(model: &dyn Ranker, data: &RecData, context: &ScoreContext, cutoffs: &[usize], counts: &[u64], device: &Device) -> Result<RankingScores> {
    let nothing = vec![HashSet::new(); data.users.len()];
    ranking::evaluate(model, context, &data.cold, &nothing, cutoffs, counts, Some(&data.cold_items), device)
}

/// A popularity model holding `counts`.
pub fn popularity_of(counts: &[u64], device: &Device) -> Popularity {
    Popularity::with_counts(counts, device)
}

/// `recall@10 0.2466 ndcg@10 0.2928 mrr@10 … hit@10 … precision@10 …` at the first cut-off.
pub fn summary(scores: &RankingScores) -> String {
    let Some((k, a)) = scores.at.iter().next() else { return "no customers to score".into() };
    format!(
        "recall@{k} {:.4} ndcg@{k} {:.4} mrr@{k} {:.4} hit@{k} {:.4} precision@{k} {:.4} ({} customers)",
        a.recall, a.ndcg, a.mrr, a.hit, a.precision, scores.users
    )
}
