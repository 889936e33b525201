//! The recommendation family's data: interactions read and mapped to indices
//! ([`interactions`]), item and customer features ([`features`]), the seeded split, and the
//! batches each model trains on ([`batches`]).

pub mod batches;
mod features;
mod interactions;
mod run_features;

pub use features::{FeatureTensors, Features, read_features};
pub use interactions::{IdMap, Interaction, parse_time, read_interactions};

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result, bail};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use vitrine_core::reporter::Reporter;
use vitrine_core::run_dir::RunDir;

use crate::config::{RecommendConfig, SplitKind};

/// The files a run keeps its ID maps and split in.
pub const USERS_FILE: &str = "users.json";
pub const ITEMS_FILE: &str = "items.json";
pub const SPLIT_FILES: [&str; 3] = ["split-train.csv", "split-valid.csv", "split-test.csv"];
/// Interactions of the items held out for the cold-start evaluation.
pub const COLD_FILE: &str = "split-cold.csv";

/// The interactions of a run, split, with the ID maps and features.
pub struct RecData {
    pub users: IdMap,
    pub items: IdMap,
    pub train: Vec<Interaction>,
    pub valid: Vec<Interaction>,
    pub test: Vec<Interaction>,
    /// Interactions of the cold-start items (none of them is in `train` or `valid`).
    pub cold: Vec<Interaction>,
    pub cold_items: Vec<u32>,
    pub item_features: Option<Features>,
    pub user_features: Option<Features>,
    /// One line per thing dropped or merged on the way, for the log and the report.
    pub notes: Vec<String>,
}

impl RecData {
    /// Each user's training items, as sets.
    pub fn seen(&self) -> Vec<HashSet<u32>> {
        seen_items(&self.train, self.users.len())
    }
}

/// Each user's items in `interactions`, as sets.
pub fn seen_items(interactions: &[Interaction], users: usize) -> Vec<HashSet<u32>> {
    let mut seen = vec![HashSet::new(); users];
    for i in interactions {
        seen[i.user as usize].insert(i.item);
    }
    seen
}

/// Loads and splits the configured interactions.
pub fn load_data(config: &RecommendConfig, reporter: &dyn Reporter) -> Result<RecData> {
    let d = &config.data;
    let strict = config.run.strict;
    let mut notes = Vec::new();
    let mut note = |line: String| {
        reporter.info(&format!("data: {line}"));
        notes.push(line);
    };
    let (mut users, mut items) = (IdMap::default(), IdMap::default());
    let report_skipped = |what: &str, skipped: &[vitrine_core::data::SkippedRow], note: &mut dyn FnMut(String)| {
        if !skipped.is_empty() {
            note(format!("{what}: skipped {} bad row(s)", skipped.len()));
            for row in skipped.iter().take(5) {
                reporter.info(&format!("  {row}"));
            }
        }
    };
    let mut item_features = match &d.items {
        Some(source) => {
            let read = read_features(source, &mut items, strict)?;
            report_skipped("data.items", &read.skipped, &mut note);
            Some(read.features)
        }
        None => None,
    };
    let mut user_features = match &d.users {
        Some(source) => {
            let read = read_features(source, &mut users, strict)?;
            report_skipped("data.users", &read.skipped, &mut note);
            Some(read.features)
        }
        None => None,
    };
    let read = read_interactions(&d.interactions, &mut users, &mut items, d.items.is_some(), d.implicit_threshold, d.limit, strict)?;
    report_skipped("data.interactions", &read.skipped, &mut note);
    if read.below_threshold > 0 {
        note(format!(
            "{} interaction(s) rated below implicit_threshold {} are not positive feedback",
            read.below_threshold,
            d.implicit_threshold.unwrap_or_default()
        ));
    }
    let mut rows = read.rows;
    if rows.is_empty() {
        bail!("{}: no usable interactions", d.interactions.file.display());
    }
    if let Some(f) = &mut item_features {
        f.extend_to(items.len());
    }
    if let Some(f) = &mut user_features {
        f.extend_to(users.len());
    }
    if d.split.kind == SplitKind::Random {
        let before = rows.len();
        rows = first_of_each_pair(rows);
        if rows.len() < before {
            note(format!("merged {} repeated interaction(s) of a customer with the same item (the first is kept)", before - rows.len()));
        }
    }
    let seed = config.run.split_seed();
    if d.split.kind == SplitKind::Files && config.eval_settings().cold_start_items > 0.0 {
        bail!("eval.cold_start_items holds items out of a split Vitrine makes; with data.split.kind = \"files\" the split is given");
    }
    let (cold, cold_items) = match (&item_features, config.eval_settings().cold_start_items) {
        (Some(features), share) if share > 0.0 => hold_out_cold_items(&mut rows, features, items.len(), share, seed),
        _ => (Vec::new(), Vec::new()),
    };
    if !cold_items.is_empty() {
        note(format!("cold start: {} item(s) and their {} interaction(s) held out of training", cold_items.len(), cold.len()));
    }
    let (train, valid, test) = match d.split.kind {
        SplitKind::Random => split_random(&rows, &users, d.split.valid, d.split.test, seed),
        SplitKind::LeaveOneOut => split_leave_one_out(&rows, users.len()),
        SplitKind::Files => {
            let mut part = |file: &Option<std::path::PathBuf>, name: &str| -> Result<Vec<Interaction>> {
                let file = file.clone().context("checked when the config loads")?;
                let source = crate::config::InteractionSource { file, ..d.interactions.clone() };
                let read = read_interactions(&source, &mut users, &mut items, d.items.is_some(), d.implicit_threshold, None, strict)?;
                report_skipped(name, &read.skipped, &mut note);
                Ok(read.rows)
            };
            let (valid, test) = (part(&d.split.valid_file, "data.split.valid_file")?, part(&d.split.test_file, "data.split.test_file")?);
            if let Some(f) = &mut item_features {
                f.extend_to(items.len());
            }
            if let Some(f) = &mut user_features {
                f.extend_to(users.len());
            }
            (rows, valid, test)
        }
    };
    if train.is_empty() || test.is_empty() {
        bail!("too little data: {} training and {} test interactions", train.len(), test.len());
    }
    Ok(RecData { users, items, train, valid, test, cold, cold_items, item_features, user_features, notes })
}

/// Keeps the first interaction of each (customer, item) pair, in file order.
fn first_of_each_pair(rows: Vec<Interaction>) -> Vec<Interaction> {
    let mut seen = HashSet::new();
    rows.into_iter().filter(|r| seen.insert((r.user, r.item))).collect()
}

/// Moves every interaction of a seeded `share` of the items (those with features and at least
/// one interaction) out of `rows`.
fn hold_out_cold_items(rows: &mut Vec<Interaction>, features: &Features, items: usize, share: f64, seed: u64) -> (Vec<Interaction>, Vec<u32>) {
    let mut bought: Vec<u32> = rows.iter().map(|r| r.item).collect::<HashSet<_>>().into_iter().filter(|&i| features.has_any(i as usize)).collect();
    bought.sort_unstable();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC01D);
    bought.shuffle(&mut rng);
    let n = ((items as f64 * share).round() as usize).min(bought.len());
    let mut cold_items: Vec<u32> = bought[..n].to_vec();
    cold_items.sort_unstable();
    let cold_set: HashSet<u32> = cold_items.iter().copied().collect();
    let (cold, warm): (Vec<Interaction>, Vec<Interaction>) = rows.drain(..).partition(|r| cold_set.contains(&r.item));
    *rows = warm;
    (cold, cold_items)
}

/// Per customer, a seeded random share for validation and test, the rest for training, with
/// RecBole's rounding (`RS` split grouped by user): each part gets `floor(share · n)`, and a
/// customer with fewer than ten interactions still gives one to validation and to test while
/// more than one is left for training. Each customer's draw depends on the seed and their ID
/// alone, so adding a feature file (which numbers customers differently) keeps the split.
pub fn split_random(rows: &[Interaction], users: &IdMap, valid: f64, test: f64, seed: u64) -> (Vec<Interaction>, Vec<Interaction>, Vec<Interaction>) {
    let mut by_user: Vec<Vec<Interaction>> = vec![Vec::new(); users.len()];
    for r in rows {
        by_user[r.user as usize].push(*r);
    }
    let (mut train, mut valid_rows, mut test_rows) = (Vec::new(), Vec::new(), Vec::new());
    for (user, mut own) in by_user.into_iter().enumerate() {
        own.sort_by_key(|r| r.line);
        own.shuffle(&mut StdRng::seed_from_u64(seed ^ fnv1a(users.id(user as u32))));
        let n = own.len();
        let ratios = [1.0 - valid - test, valid, test];
        let mut counts = [0usize, (valid * n as f64) as usize, (test * n as f64) as usize];
        counts[0] = n - counts[1] - counts[2];
        for i in 1..3 {
            if counts[0] <= 1 {
                break;
            }
            let part = ratios[3 - i] * n as f64;
            if 0.0 < part && part < 1.0 {
                counts[3 - i] += 1;
                counts[0] -= 1;
            }
        }
        let (t, rest) = own.split_at(counts[0]);
        let (v, s) = rest.split_at(counts[1]);
        train.extend_from_slice(t);
        valid_rows.extend_from_slice(v);
        test_rows.extend_from_slice(s);
    }
    (train, valid_rows, test_rows)
}

/// FNV-1a: a hash of an ID that is the same on every machine and Rust version.
fn fnv1a(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Per customer by time (ties in file order): the last interaction is the test, the one before
/// it validation (customers with three or more), the rest training.
pub fn split_leave_one_out(rows: &[Interaction], users: usize) -> (Vec<Interaction>, Vec<Interaction>, Vec<Interaction>) {
    let mut by_user: Vec<Vec<Interaction>> = vec![Vec::new(); users];
    for r in rows {
        by_user[r.user as usize].push(*r);
    }
    let (mut train, mut valid, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for mut own in by_user {
        own.sort_by_key(|r| (r.time, r.line));
        let n = own.len();
        match n {
            0 => {}
            1 => train.extend(own),
            2 => {
                train.push(own[0]);
                test.push(own[1]);
            }
            _ => {
                train.extend_from_slice(&own[..n - 2]);
                valid.push(own[n - 2]);
                test.push(own[n - 1]);
            }
        }
    }
    (train, valid, test)
}

/// Each customer's training items in time order (file order without times): the sequences
/// `sasrec` reads.
pub fn sequences(interactions: &[Interaction], users: usize) -> Vec<Vec<u32>> {
    let mut by_user: Vec<Vec<Interaction>> = vec![Vec::new(); users];
    for r in interactions {
        by_user[r.user as usize].push(*r);
    }
    by_user
        .into_iter()
        .map(|mut own| {
            own.sort_by_key(|r| (r.time, r.line));
            own.into_iter().map(|r| r.item).collect()
        })
        .collect()
}

/// Writes the ID maps and the split into a new run, as files `vitrine eval` and other tools read.
pub fn save_split(run: &RunDir, data: &RecData, user_column: &str, item_column: &str) -> Result<()> {
    run.write(USERS_FILE, serde_json::to_string(data.users.ids())?)?;
    run.write(ITEMS_FILE, serde_json::to_string(data.items.ids())?)?;
    let parts = [(&data.train, SPLIT_FILES[0]), (&data.valid, SPLIT_FILES[1]), (&data.test, SPLIT_FILES[2]), (&data.cold, COLD_FILE)];
    for (rows, file) in parts {
        run.write(file, to_csv(rows, &data.users, &data.items, user_column, item_column)?)?;
    }
    Ok(())
}

/// Reads back a run's split file.
pub fn read_split(run: &RunDir, file: &str, users: &IdMap, items: &IdMap, user_column: &str, item_column: &str) -> Result<Vec<Interaction>> {
    let mut out = Vec::new();
    let path = run.file(file);
    vitrine_core::data::Table::new(&path)?.read(&[user_column, item_column, "timestamp"], |row| {
        let field = |i: usize, name: &str| row.text(i, name).map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), row.line));
        let (user, item) = (field(0, user_column)?, field(1, item_column)?);
        let (Some(user), Some(item)) = (users.get(user), items.get(item)) else {
            bail!("{}: line {}: an ID the run does not know", path.display(), row.line);
        };
        let time = field(2, "timestamp")?.parse().unwrap_or(0);
        out.push(Interaction { user, item, time, line: row.line });
        Ok(())
    })?;
    Ok(out)
}

fn to_csv(rows: &[Interaction], users: &IdMap, items: &IdMap, user_column: &str, item_column: &str) -> Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([user_column, item_column, "timestamp"])?;
    for r in rows {
        writer.write_record([users.id(r.user), items.id(r.item), &r.time.to_string()])?;
    }
    Ok(writer.into_inner()?)
}

/// Interactions per item in `rows`.
pub fn item_counts(rows: &[Interaction], items: usize) -> Vec<u64> {
    let mut counts = vec![0u64; items];
    for r in rows {
        counts[r.item as usize] += 1;
    }
    counts
}

/// The sizes of a run's data for its report and log.
pub fn describe(data: &RecData) -> BTreeMap<&'static str, usize> {
    BTreeMap::from([
        ("users", data.users.len()),
        ("items", data.items.len()),
        ("train", data.train.len()),
        ("valid", data.valid.len()),
        ("test", data.test.len()),
        ("cold", data.cold.len()),
    ])
}

#[cfg(test)]
mod tests;
