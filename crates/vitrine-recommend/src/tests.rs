//! Real trainings on the shipped MovieLens sample (300 customers, 31k ratings): each learned
//! recommender beats popularity on the same split, counted baselines, the cold-start path, and
//! resume.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use vitrine_core::backend::{BackendChoice, select_device, select_devices};
use vitrine_core::config::ConfigFile;
use vitrine_core::report::RunReport;
use vitrine_core::reporter::Silent;
use vitrine_core::run_dir::RunDir;
use vitrine_core::train::TrainContext;

use crate::config::{RecommendConfig, resolve};
use crate::inference::RecommendRun;
use crate::training::train;

/// burn's random generator is one per process: tests that build models take turns, so each
/// run's seeded draws are its own.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn sample(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/movielens-sample").join(file).display().to_string()
}

/// A config on the sample: `model` is the `[model]` body, `extra` more TOML after `[data]`'s keys.
fn config(model: &str, extra_data: &str, overrides: &[&str]) -> RecommendConfig {
    let text = format!(
        r#"task = "recommendation"
[data]
interactions = {{ file = "{}", rating = "rating", timestamp = "timestamp" }}
items = {{ file = "{}", id = "item_id", name = "movie_title", categorical = ["release_year"], multi = {{ class = " " }} }}
{extra_data}
[model]
{model}
"#,
        sample("ml-100k.inter"),
        sample("ml-100k.item")
    );
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    resolve(&ConfigFile::from_text(Path::new("test.toml"), text).unwrap(), &overrides).unwrap()
}

fn train_into(config: &RecommendConfig, run: &RunDir, resuming: bool) -> RunReport {
    let compute = select_device(BackendChoice::Flex).unwrap();
    train(config, &TrainContext { run, compute: &compute, resuming, reporter: &Silent }).unwrap()
}

fn fresh_run(config: &RecommendConfig) -> (tempfile::TempDir, PathBuf, RunReport) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let _turn = one_at_a_time();
    let report = train_into(config, &RunDir::create(&dir).unwrap(), false);
    (tmp, dir, report)
}

fn figure(report: &RunReport, name: &str) -> f64 {
    report.held_out.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name} in {:?}", report.held_out)).1
}

#[test]
fn matrix_factorisation_learns_and_beats_popularity() {
    let c = config("name = \"bpr-mf\"", "", &["train.epochs=25", "train.batch_size=1024", "train.optimizer.lr=5e-3"]);
    let (_tmp, dir, report) = fresh_run(&c);
    let (first, last) = (&report.epochs[0], report.epochs.last().unwrap());
    assert!(last.train_loss < 0.7 * first.train_loss, "BPR loss falls: {} → {}", first.train_loss, last.train_loss);
    let mrr = |r: &vitrine_core::train::EpochRecord| r.scores["mrr@10"].value;
    assert!(mrr(report.epochs.iter().max_by(|a, b| mrr(a).total_cmp(&mrr(b))).unwrap()) > mrr(first), "validation MRR@10 rises");
    let (model, popular) = (figure(&report, "test ndcg@10"), figure(&report, "pop test ndcg@10"));
    assert!(model > popular + 0.02, "bpr-mf NDCG@10 {model} vs popularity {popular}");
    for file in ["users.json", "items.json", "split-train.csv", "split-test.csv", "model.bpk", "report.md", "ndcg@10.png"] {
        assert!(dir.join(file).is_file(), "{file}");
    }

    // The trained run serves: known items are never recommended, names come from the item file.
    let run = RecommendRun::open(&dir, &burn::tensor::Device::flex(), &Silent).unwrap();
    let recs = run.recommend(&["1".to_string()], 10, &burn::tensor::Device::flex()).unwrap();
    let known: std::collections::HashSet<String> =
        run.everything().iter().filter(|r| r.user == run.data.users.get("1").unwrap()).map(|r| run.data.items.id(r.item).to_string()).collect();
    assert_eq!(recs[0].items.len(), 10);
    assert!(recs[0].items.iter().all(|i| !known.contains(&i.item) && i.name.is_some()), "{:?}", recs[0].items);
    let similar = run.similar("50", 5, &burn::tensor::Device::flex()).unwrap();
    assert_eq!(similar.len(), 5);
    assert!(similar.iter().all(|s| s.item != "50"));
}

#[test]
fn counted_baselines_rank_and_item_knn_beats_popularity() {
    let pop = config("name = \"pop\"", "", &[]);
    let (_a, _, pop_report) = fresh_run(&pop);
    let knn = config("name = \"item-knn\"\nneighbours = 50", "", &[]);
    let (_b, _, knn_report) = fresh_run(&knn);
    let pop_ndcg = figure(&pop_report, "test ndcg@10");
    assert_eq!(pop_ndcg, figure(&pop_report, "pop test ndcg@10"), "pop is its own baseline");
    assert!(pop_ndcg > 0.05, "popularity is far better than random on MovieLens: {pop_ndcg}");
    let knn_ndcg = figure(&knn_report, "test ndcg@10");
    assert!(knn_ndcg > pop_ndcg + 0.02, "item-knn {knn_ndcg} vs pop {pop_ndcg}");
}

#[test]
fn general_models_score_the_test_from_training_items_alone() {
    // RecBole's ItemKNN scores the test from each customer's training items; reading their
    // validation items too would know more than it does (and score higher on ml-100k).
    let c = config("name = \"item-knn\"\nneighbours = 50", "", &[]);
    let (_tmp, dir, report) = fresh_run(&c);
    let device = burn::tensor::Device::flex();
    let run = RecommendRun::open(&dir, &device, &Silent).unwrap();
    let d = &run.data;
    let known = crate::training::test_history(d);
    let exclude = crate::training::excluded(d, &known, true);
    let counts = crate::data::item_counts(&d.train, d.items.len());
    let ndcg = |history: &[crate::data::Interaction]| {
        let context = crate::training::score_context(d, std::sync::Arc::new(crate::data::sequences(history, d.users.len())), &device);
        crate::ranking::evaluate(run.ranker(), &context, &d.test, &exclude, &[10], &counts, None, &device).unwrap().at[&10].ndcg
    };
    let reported = figure(&report, "test ndcg@10");
    assert!((ndcg(&d.train) - reported).abs() < 1e-9, "the report's test NDCG@10 {reported} reads training items alone");
    assert!((ndcg(&known) - reported).abs() > 1e-4, "validation items would change item-knn's test scores");
}

#[test]
fn two_tower_recommends_items_nobody_has_bought_yet() {
    let c = config(
        "name = \"two-tower\"\nembedding_dim = 32\nhidden = [64]",
        "[eval]\ncold_start_items = 0.1",
        &["train.epochs=12", "train.batch_size=512", "train.early_stopping.patience=20"],
    );
    let (_tmp, dir, report) = fresh_run(&c);
    let cold = figure(&report, "cold-start recall@10");
    let random = figure(&report, "cold-start random recall@10");
    assert!(cold > 2.0 * random, "cold-start recall@10 {cold} vs random {random}");
    let cold_items = std::fs::read_to_string(dir.join("split-cold.csv")).unwrap();
    let train_items = std::fs::read_to_string(dir.join("split-train.csv")).unwrap();
    let item_of = |line: &str| line.split(',').nth(1).unwrap().to_string();
    let held: std::collections::HashSet<String> = cold_items.lines().skip(1).map(item_of).collect();
    assert!(!held.is_empty());
    assert!(train_items.lines().skip(1).all(|l| !held.contains(&item_of(l))), "cold-start items never train");
}

#[test]
fn two_tower_with_the_exact_softmax_and_item_offsets_beats_popularity_and_places_new_items() {
    // Every item a candidate at each step, new items never among them; an offset per item.
    let c = config(
        "name = \"two-tower\"\nembedding_dim = 32\nhidden = [64]\nfull_softmax = true\nitem_bias = true",
        "[eval]\ncold_start_items = 0.1",
        &["train.epochs=12", "train.batch_size=512", "train.early_stopping.patience=20"],
    );
    let (_tmp, _dir, report) = fresh_run(&c);
    let (first, last) = (&report.epochs[0], report.epochs.last().unwrap());
    assert!(last.train_loss < first.train_loss - 0.1, "softmax loss falls: {} → {}", first.train_loss, last.train_loss);
    let (model, popular) = (figure(&report, "test ndcg@10"), figure(&report, "pop test ndcg@10"));
    assert!(model > popular + 0.01, "two-tower NDCG@10 {model} vs popularity {popular}");
    let cold = figure(&report, "cold-start recall@10");
    let random = figure(&report, "cold-start random recall@10");
    assert!(cold > 2.0 * random, "cold-start recall@10 {cold} vs random {random}");
}

#[test]
fn a_resumed_run_continues_at_the_next_epoch() {
    let c = config("name = \"bpr-mf\"", "", &["train.epochs=3", "train.batch_size=2048", "train.early_stopping.patience=50"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let _turn = one_at_a_time();
    let run = RunDir::create(&dir).unwrap();
    let mut first = c.clone();
    first.train.epochs = 2;
    train_into(&first, &run, false);
    assert!(run.file("checkpoints/epoch-2/optimizer.bpk").is_file());
    let report = train_into(&c, &run, true);
    assert_eq!(report.epochs.iter().map(|r| r.epoch).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(report.epochs[2].train_loss < report.epochs[0].train_loss, "the optimizer state came back");
}

#[test]
fn sequences_train_sasrec_above_popularity() {
    let c = config(
        "name = \"sasrec\"\nembedding_dim = 32\nmax_len = 20\nlayers = 1\nheads = 2\nfeed_forward = 64\ndropout = 0.2",
        "split = { kind = \"leave-one-out\" }",
        &["train.epochs=8", "train.batch_size=64", "train.optimizer.lr=3e-3"],
    );
    let (_tmp, _dir, report) = fresh_run(&c);
    let (first, last) = (&report.epochs[0], report.epochs.last().unwrap());
    assert!(last.train_loss < first.train_loss, "{} → {}", first.train_loss, last.train_loss);
    let (model, popular) = (figure(&report, "test hit@10"), figure(&report, "pop test hit@10"));
    assert!(model > popular, "sasrec hit@10 {model} vs popularity {popular}");
}

#[test]
fn row_wise_updates_learn_beat_popularity_and_resume_exactly() {
    let with = |epochs: &str| {
        config(
            "name = \"bpr-mf\"\nsparse_updates = true",
            "",
            &[epochs, "train.batch_size=1024", "train.optimizer.lr=5e-3", "train.early_stopping.patience=50"],
        )
    };
    let (_tmp, _dir, report) = fresh_run(&with("train.epochs=25"));
    let (first, last) = (&report.epochs[0], report.epochs.last().unwrap());
    assert!(last.train_loss < 0.7 * first.train_loss, "BPR loss falls: {} → {}", first.train_loss, last.train_loss);
    let (model, popular) = (figure(&report, "test ndcg@10"), figure(&report, "pop test ndcg@10"));
    assert!(model > popular + 0.02, "row-wise bpr-mf NDCG@10 {model} vs popularity {popular}");

    // Two epochs, then a resume to three, end exactly where three in one go end: the moments
    // and the step count come back from the checkpoint.
    let (_straight_tmp, _, straight) = fresh_run(&with("train.epochs=3"));
    let tmp = tempfile::tempdir().unwrap();
    let _turn = one_at_a_time();
    let run = RunDir::create(&tmp.path().join("run")).unwrap();
    train_into(&with("train.epochs=2"), &run, false);
    assert!(run.file("checkpoints/epoch-2/row-adam.bpk").is_file());
    let resumed = train_into(&with("train.epochs=3"), &run, true);
    assert_eq!(resumed.epochs[2].train_loss, straight.epochs[2].train_loss);
}

/// `run.devices` splits batches for the classifiers only; a recommender asked to is refused
/// before anything is written.
#[test]
fn several_devices_are_refused_where_training_cannot_split_batches() {
    let mut config = config("name = \"bpr-mf\"", "", &[]);
    config.run.devices = vec!["flex".into(), "ndarray".into()];
    let compute = select_devices(&config.run.devices).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir::create(&tmp.path().join("run")).unwrap();
    let error = format!("{:#}", train(&config, &TrainContext { run: &run, compute: &compute, resuming: false, reporter: &Silent }).unwrap_err());
    assert!(error.contains("run.devices names 2 devices") && error.contains("train on one device"), "{error}");
    assert!(!tmp.path().join("run/config.toml").exists(), "nothing written");
}
