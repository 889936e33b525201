//! Throughput of a recommender on one device: training interactions per second, and customers
//! per second when ranking every item for them (top 10, known items left out), a batch of them
//! per call or one (`--rank-customers 1`, serving's latency), on an interactions file or on
//! generated data with power-law popularity.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use rand::{Rng, SeedableRng, rngs::StdRng};
use vitrine_core::bench::BenchResult;
use vitrine_core::config::ConfigFile;
use vitrine_core::data::BatchSource;
use vitrine_core::family::{BenchRequest, args};
use vitrine_core::train::TrainTask;

use crate::config::{Architecture, RecommendConfig, resolve};
use crate::data::batches::InteractionBatches;
use crate::data::{Features, IdMap, Interaction, RecData, read_interactions, seen_items, sequences};
use crate::model::build::Build;
use crate::model::counted::{ItemKnn, Popularity};
use crate::model::factorization::{MatrixFactorization, NeuMf};
use crate::model::sasrec::Sasrec;
use crate::model::two_tower::TwoTower;
use crate::ranking::{self, RankRequest};
use crate::training::{RecommendTask, score_context};

/// Times `arch` as `vitrine bench --model` asks.
pub fn bench(arch: Architecture, request: &BenchRequest) -> Result<BenchResult> {
    let mut data = match args::value::<PathBuf>(request.args, "interactions") {
        Some(path) => read_file(&path)?,
        None => generated(
            args::value(request.args, "users").unwrap_or(943),
            args::value(request.args, "items").unwrap_or(1682),
            args::value(request.args, "count").unwrap_or(100_000),
            42,
        ),
    };
    if arch == Architecture::TwoTower {
        data.item_features = Some(generated_genres(data.items.len(), 42));
    }
    if args::flag(request.args, "sparse_updates") && arch != Architecture::BprMf {
        anyhow::bail!("--sparse-updates applies to bpr-mf only");
    }
    match arch {
        Architecture::Pop => measure::<Popularity>(arch, &data, request),
        Architecture::ItemKnn => measure::<ItemKnn>(arch, &data, request),
        Architecture::BprMf => measure::<MatrixFactorization>(arch, &data, request),
        Architecture::Neumf => measure::<NeuMf>(arch, &data, request),
        Architecture::TwoTower => measure::<TwoTower>(arch, &data, request),
        Architecture::Sasrec => measure::<Sasrec>(arch, &data, request),
    }
}

/// The model's default config (what `vitrine train` would use for it) on `data`'s sizes.
fn config_for(arch: Architecture) -> Result<RecommendConfig> {
    let text = format!(
        "task = \"recommendation\"\n[data]\ninteractions = {{ file = \"bench.csv\", timestamp = \"timestamp\" }}\nsplit = {{ kind = \"{}\" }}\n{}[model]\nname = \"{}\"\n",
        if arch == Architecture::Sasrec { "leave-one-out" } else { "random" },
        // The hybrid reads item features: the bench's are `generated_genres`.
        if arch == Architecture::TwoTower { "items = { file = \"bench-items.csv\", id = \"item_id\", multi = { genres = \"|\" } }\n" } else { "" },
        arch.name()
    );
    resolve(&ConfigFile::from_text(std::path::Path::new("bench.toml"), text)?, &[])
}

fn measure<M: Build + Clone>(arch: Architecture, data: &RecData, request: &BenchRequest) -> Result<BenchResult> {
    let mut config = config_for(arch)?;
    config.model.sparse_updates = args::flag(request.args, "sparse_updates");
    let compute = request.compute;
    let batch_size = request.batch_size.unwrap_or(config.train.batch_size);
    let train_device = compute.device.clone().autodiff();
    train_device.seed(0);
    let users = data.users.len();
    let history = Arc::new(sequences(&data.train, users));
    let model = M::build(&config, data, &train_device)?;
    let context = score_context(data, history.clone(), &train_device);
    let mut task = RecommendTask::new(model, &config, context.clone(), context, None, &train_device);
    let seen = Arc::new(seen_items(&data.train, users));
    let kind = M::batch_kind(&config);
    let batches =
        InteractionBatches::new(kind, Arc::new(data.train.clone()), seen.clone(), history.clone(), data.items.len(), batch_size, Some(1), train_device.clone());
    // Training: examples per second, in the unit of the model's batches (BatchKind::unit).
    // `--rank-only` leaves it untimed: an untrained model ranks with the same arithmetic as a
    // trained one.
    let mut train_samples_per_sec = None;
    if !args::flag(request.args, "rank_only") {
        let mut stream = batches.batches(1).cycle_epochs(&batches);
        let (mut examples, mut steps) = (0usize, 0usize);
        let train_rate = request.timing.rate(|| {
            let batch = stream.next().expect("batches never run out");
            examples += batch.count();
            steps += 1;
            // The batch from the loader's channel first: only the step runs where flex computes.
            let _: f32 = task.train_step_on(&train_device, batch, 1e-3).loss_sum.into_scalar();
        });
        train_samples_per_sec = Some(train_rate * examples as f64 / steps.max(1) as f64);
    }
    if M::COUNTED {
        task.model = task.model.clone().finish();
    }
    // Ranking: every item for a batch of customers, their training items left out, top 10.
    let model = task.model.valid();
    let device = &compute.device;
    let rank_context = score_context(data, history, device);
    let ranked_users: Vec<u32> = (0..users as u32).collect();
    let chunk = args::value(request.args, "rank_customers").unwrap_or_else(|| crate::model::Ranker::scoring_batch(&model, data.items.len())).min(users.max(1));
    let mut start = 0usize;
    let infer_rate = request.timing.rate_on(device, || {
        let end = (start + chunk).min(users);
        let batch = &ranked_users[start..end];
        ranking::rank(&model, batch, &rank_context, RankRequest { k: 10, exclude: Some(&seen), candidates: None }, device, |_, _| Ok(()))
            .expect("ranking a batch");
        start = if end >= users { 0 } else { end };
    });
    let mut result = BenchResult::new(arch.name(), compute, batch_size, 0.0, 0.0);
    result.train_samples_per_sec = train_samples_per_sec;
    result.inference_samples_per_sec = infer_rate * chunk as f64;
    result.extra.insert("train_unit".into(), kind.unit().into());
    result.extra.insert("inference_unit".into(), "customers ranked over every item (top 10)".into());
    result.extra.insert("customers_per_call".into(), chunk.into());
    result.extra.insert("users".into(), users.into());
    result.extra.insert("items".into(), data.items.len().into());
    if arch == Architecture::TwoTower {
        result.extra.insert("item_features".into(), "generated genres, one to three of 19 per item".into());
    }
    result.extra.insert("interactions".into(), data.train.len().into());
    Ok(result)
}

/// Each item's genres, one to three of 19 as MovieLens-100K's films have: the features
/// `two-tower` needs, for data that comes without them.
fn generated_genres(items: usize, seed: u64) -> Features {
    const GENRES: u32 = 19;
    let mut rng = StdRng::seed_from_u64(seed);
    let tokens = (0..items)
        .map(|_| {
            let mut genres = Vec::with_capacity(3);
            for _ in 0..rng.random_range(1..=3) {
                let genre = rng.random_range(0..GENRES);
                if !genres.contains(&genre) {
                    genres.push(genre);
                }
            }
            genres
        })
        .collect();
    Features {
        vocabulary: (0..GENRES).map(|g| format!("genres=G{g}")).collect(),
        tokens,
        numbers: vec![Vec::new(); items],
        numeric_columns: Vec::new(),
        names: None,
    }
}

/// Batches of consecutive epochs, for timing more steps than one epoch has.
trait CycleEpochs<'a> {
    fn cycle_epochs(self, source: &'a InteractionBatches) -> Box<dyn Iterator<Item = crate::data::batches::RecBatch> + 'a>;
}

impl<'a> CycleEpochs<'a> for Box<dyn Iterator<Item = crate::data::batches::RecBatch> + 'a> {
    fn cycle_epochs(self, source: &'a InteractionBatches) -> Box<dyn Iterator<Item = crate::data::batches::RecBatch> + 'a> {
        Box::new(self.chain((2..).flat_map(move |epoch| source.batches(epoch))))
    }
}

/// An interactions file with `user_id` and `item_id` columns, all of it for training.
fn read_file(path: &std::path::Path) -> Result<RecData> {
    let source = crate::config::InteractionSource { file: path.to_path_buf(), user: "user_id".into(), item: "item_id".into(), rating: None, timestamp: None };
    let (mut users, mut items) = (IdMap::default(), IdMap::default());
    let read = read_interactions(&source, &mut users, &mut items, false, None, None, false)?;
    Ok(all_train(users, items, read.rows))
}

fn all_train(users: IdMap, items: IdMap, train: Vec<Interaction>) -> RecData {
    RecData {
        users,
        items,
        train,
        valid: Vec::new(),
        test: Vec::new(),
        cold: Vec::new(),
        cold_items: Vec::new(),
        item_features: None,
        user_features: None,
        notes: Vec::new(),
    }
}

/// `count` distinct interactions of `users` customers with `items` items, item popularity and
/// customer activity both Zipf-like (the k-th most popular is drawn ∝ 1/k).
pub fn generated(users: usize, items: usize, count: usize, seed: u64) -> RecData {
    let mut rng = StdRng::seed_from_u64(seed);
    let zipf = |n: usize| -> Vec<f64> {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / k as f64).collect();
        let total: f64 = weights.iter().sum();
        weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / total;
                Some(*acc)
            })
            .collect()
    };
    let (item_cdf, user_cdf) = (zipf(items), zipf(users));
    let draw = |cdf: &[f64], rng: &mut StdRng| cdf.partition_point(|&c| c < rng.random::<f64>()).min(cdf.len() - 1) as u32;
    let mut seen = HashSet::with_capacity(count);
    let mut rows = Vec::with_capacity(count);
    let limit = count.min(users * items / 2);
    while rows.len() < limit {
        let (user, item) = (draw(&user_cdf, &mut rng), draw(&item_cdf, &mut rng));
        if seen.insert((user, item)) {
            rows.push(Interaction { user, item, time: rows.len() as i64, line: rows.len() as u64 + 2 });
        }
    }
    let ids = |n: usize, prefix: &str| IdMap::from_ids((0..n).map(|i| format!("{prefix}{i}")).collect());
    all_train(ids(users, "U"), ids(items, "I"), rows)
}
