//! The recommendation family as the `vitrine` binary sees it, with its own commands:
//! `recommend`, `similar` and `segment`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use vitrine_core::bench::BenchResult;
use vitrine_core::config::{ConfigFile, RunSection};
use vitrine_core::export::WeightsFormat;
use vitrine_core::family::{BenchRequest, Configured, Experiment, Family, Output, TrainedRun, UseContext, args};
use vitrine_core::reporter::Silent;
use vitrine_core::run_dir::RunDir;

use crate::config::{Architecture, RecommendConfig, TASK, resolve};
use crate::inference::{RecommendRun, Recommendations};
use crate::segment::{scatter_png, segment};

/// Personalised recommendation: `pop`, `item-knn`, `bpr-mf`, `neumf`, `two-tower`, `sasrec`.
pub struct RecommendFamily;

/// A trained run opened lazily: the model loads on the device of the command that uses it.
struct Opened {
    run: RunDir,
    file: ConfigFile,
    config: RecommendConfig,
}

impl Opened {
    fn load(&self, ctx: &UseContext) -> Result<RecommendRun> {
        RecommendRun::open_with(self.run.clone(), &self.file, ctx.device(), ctx.reporter)
    }
}

/// `--k` as one cut-off (`10`), a list (`10,20`) or, for `segment`, a range (`2..12`).
fn parse_ks(raw: &str) -> Result<Vec<usize>> {
    let raw = raw.trim();
    let ks: Vec<usize> = if let Some((a, b)) = raw.split_once("..") {
        let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
        (a..=b).collect()
    } else {
        raw.split(',').map(|k| k.trim().parse::<usize>()).collect::<Result<_, _>>()?
    };
    if ks.is_empty() || ks.contains(&0) {
        bail!("--k takes numbers of at least 1: `10`, `10,20` or `2..12`");
    }
    Ok(ks)
}

fn ks(matches: &ArgMatches, default: &[usize]) -> Result<Vec<usize>> {
    match args::value::<String>(matches, "k") {
        Some(raw) => parse_ks(&raw).with_context(|| format!("--k {raw}")),
        None => Ok(default.to_vec()),
    }
}

impl Family for RecommendFamily {
    fn task(&self) -> &'static str {
        TASK
    }

    fn models(&self) -> Vec<&'static str> {
        Architecture::ALL.iter().map(|a| a.name()).collect()
    }

    fn resolve(&self, file: &ConfigFile, overrides: &[String]) -> Result<Box<dyn Experiment>> {
        Ok(Box::new(Configured { config: resolve(file, overrides)?, train: crate::training::train }))
    }

    fn open(&self, run: RunDir, config: &ConfigFile) -> Result<Box<dyn TrainedRun>> {
        run.trained_classes()?;
        Ok(Box::new(Opened { run, file: config.clone(), config: resolve(config, &[])? }))
    }

    fn bench(&self, model: &str, request: &BenchRequest) -> Result<BenchResult> {
        let arch = Architecture::ALL.into_iter().find(|a| a.name() == model).expect("the binary asks only for our models");
        crate::bench::bench(arch, request)
    }

    fn eval_args(&self) -> Vec<Arg> {
        vec![Arg::new("k").long("k").value_name("K").help("Recommenders: ranking cut-offs, e.g. 10 or 10,20 [default: the run's eval.k]")]
    }

    fn bench_args(&self) -> Vec<Arg> {
        vec![
            Arg::new("interactions")
                .long("interactions")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .help("Recommenders: an interactions file (columns user_id, item_id) [default: a generated one, see --users]"),
            Arg::new("users").long("users").value_parser(args::at_least_one).default_value("943").help("Recommenders: customers of the generated data"),
            Arg::new("items").long("items").value_parser(args::at_least_one).default_value("1682").help("Recommenders: items of the generated data"),
            Arg::new("count").long("count").value_parser(args::at_least_one).default_value("100000").help("Recommenders: interactions of the generated data"),
            Arg::new("rank_customers")
                .long("rank-customers")
                .value_name("N")
                .value_parser(args::at_least_one)
                .help("Recommenders: customers ranked per inference call; 1 times one customer's ranking, as serving does [default: as many as the model scores at once]"),
            Arg::new("rank_only")
                .long("rank-only")
                .action(ArgAction::SetTrue)
                .help("Recommenders: time the ranking alone, with the model as initialised (training untimed)"),
            Arg::new("sparse_updates").long("sparse-updates").action(ArgAction::SetTrue).help("bpr-mf: row-wise Adam updates (model.sparse_updates)"),
        ]
    }

    fn commands(&self) -> Vec<Command> {
        let k = |help: &str, default: &'static str| Arg::new("k").long("k").value_name("K").default_value(default).help(help.to_string());
        vec![
            Command::new("recommend")
                .about("Recommend items to customers with a recommendation run (leaving out what they already have)")
                .arg(Arg::new("user").long("user").value_name("ID").action(ArgAction::Append).help("A customer ID (repeatable)"))
                .arg(
                    Arg::new("all_users")
                        .long("all-users")
                        .action(ArgAction::SetTrue)
                        .requires("out")
                        .conflicts_with("user")
                        .help("Every customer, streamed to --out"),
                )
                .arg(k("Items per customer", "10"))
                .arg(
                    Arg::new("out")
                        .long("out")
                        .value_name("FILE")
                        .value_parser(value_parser!(PathBuf))
                        .help("With --all-users: the CSV to write (user,rank,item[,name])"),
                ),
            Command::new("similar")
                .about("The items most similar to an item, by a recommendation run's item vectors (or item-knn's neighbours)")
                .arg(Arg::new("item").long("item").value_name("ID").required(true).help("The item ID"))
                .arg(k("How many similar items", "10")),
            Command::new("segment")
                .about("Segment customers with K-means over a run's customer vectors (or customer features)")
                .arg(k("Segments: a number, or a range such as 2..12 (the best silhouette is kept)", "8"))
                .arg(
                    Arg::new("restarts")
                        .long("restarts")
                        .value_parser(value_parser!(usize))
                        .default_value("5")
                        .help("K-means runs from new k-means++ starts; the tightest is kept"),
                )
                .arg(args::seed())
                .arg(
                    Arg::new("out")
                        .long("out")
                        .value_name("FILE")
                        .value_parser(value_parser!(PathBuf))
                        .help("The CSV of customer → segment [default: <run>/segments.csv]; the scatter plot goes beside it"),
                ),
        ]
    }
}

impl TrainedRun for Opened {
    fn run(&self) -> &RunDir {
        &self.run
    }

    fn run_section(&self) -> &RunSection {
        &self.config.run
    }

    fn evaluate(&self, data: &[PathBuf], matches: &ArgMatches, ctx: &UseContext) -> Result<Output> {
        let [path] = data else { bail!("--data takes one interactions file (the run's column names) for a recommendation run") };
        let run = self.load(ctx)?;
        let cutoffs = ks(matches, &self.config.eval_settings().k)?;
        let (scores, unknown) = run.evaluate(path, &cutoffs, ctx)?;
        if unknown > 0 {
            ctx.reporter.info(&format!("data: left out {unknown} interaction(s) of customers or items the run does not know"));
        }
        Output::of(scores.to_text(), &scores)
    }

    fn predict(&self, _inputs: &[PathBuf], _matches: &ArgMatches, _ctx: &UseContext) -> Result<Output> {
        bail!("{} is a recommendation run: use `vitrine recommend`, `vitrine similar` or `vitrine segment`", self.run.root().display())
    }

    fn export(&self, format: WeightsFormat, out: &Path, device: &Device) -> Result<()> {
        let run = RecommendRun::open_with(self.run.clone(), &self.file, device, &Silent)?;
        run.export(format, out)
    }

    fn command(&self, name: &str, matches: &ArgMatches, ctx: &UseContext) -> Result<Output> {
        let run = self.load(ctx)?;
        match name {
            "recommend" => {
                let k = *ks(matches, &[10])?.first().expect("at least one");
                if args::flag(matches, "all_users") {
                    let out = args::value::<PathBuf>(matches, "out").expect("clap requires --out");
                    create_parent(&out)?;
                    let n = run.recommend_all(k, &out, ctx.device(), ctx.reporter)?;
                    let text = format!("wrote the top {k} items of {n} customers to {}\n", out.display());
                    return Ok(Output { json: serde_json::json!({ "customers": n, "k": k, "out": out }), text });
                }
                let users = args::values::<String>(matches, "user");
                if users.is_empty() {
                    bail!("give customers with --user ID (repeatable), or --all-users --out recs.csv");
                }
                let recommendations = run.recommend(&users, k, ctx.device())?;
                Output::of(recommendations_text(&recommendations), &recommendations)
            }
            "similar" => {
                let item = args::value::<String>(matches, "item").expect("clap requires --item");
                let k = *ks(matches, &[10])?.first().expect("at least one");
                let similar = run.similar(&item, k, ctx.device())?;
                let mut text = format!("items most similar to {}:\n", run.item_label(run.data.items.get(&item).expect("checked by similar")));
                for s in &similar {
                    text += &format!("{:>4}. {}{}\n", s.rank, s.item, s.name.as_ref().map(|n| format!("  {n}")).unwrap_or_default());
                }
                Output::of(text, &similar)
            }
            "segment" => {
                let ks = ks(matches, &[8])?;
                let restarts = args::value::<usize>(matches, "restarts").unwrap_or(5);
                let seed = args::value::<u64>(matches, "seed").unwrap_or(7);
                let csv = args::value::<PathBuf>(matches, "out").unwrap_or_else(|| run.file("segments.csv"));
                let png = csv.with_extension("png");
                create_parent(&csv)?;
                let (segmentation, vectors) = segment(&run, &ks, restarts, seed, ctx.device())?;
                let mut rows = String::from("user,segment\n");
                for (u, s) in segmentation.assignment.iter().enumerate() {
                    rows += &format!("{},{s}\n", csv_field(run.data.users.id(u as u32)));
                }
                vitrine_core::run_dir::write_atomic(&csv, rows.as_bytes())?;
                scatter_png(
                    &png,
                    &vectors,
                    &crate::segment::Clustering { k: segmentation.k, assignment: segmentation.assignment.clone(), inertia: 0.0 },
                    seed,
                )?;
                let text = format!("{}\nwrote {} and {}\n", segmentation.to_text(), csv.display(), png.display());
                Output::of(text, &segmentation)
            }
            _ => bail!("`{name}` does not apply to {}", self.run.root().display()),
        }
    }
}

/// Creates the folder a file is to be written in.
fn create_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display())),
        None => Ok(()),
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n']) { format!("\"{}\"", value.replace('"', "\"\"")) } else { value.to_string() }
}

fn recommendations_text(all: &[Recommendations]) -> String {
    let mut out = String::new();
    for r in all {
        out += &format!("customer {}:\n", r.user);
        for item in &r.items {
            out += &format!("{:>4}. {}{}\n", item.rank, item.item, item.name.as_ref().map(|n| format!("  {n}")).unwrap_or_default());
        }
    }
    out
}
