//! The command line: the verbs every family shares (their arguments below), each family's own
//! flags for `eval`, `predict` and `bench`, and each family's own commands, gathered from the
//! registry into one `clap` command.

use std::path::PathBuf;

use clap::{Args, Command, CommandFactory, Parser};
use vitrine_core::backend::BackendChoice;
use vitrine_core::data::ClassMap;
use vitrine_core::export::WeightsFormat;
use vitrine_core::family::{Family, args};

const EXAMPLES: &str = "Examples:
  vitrine train configs/quickstart.toml
  vitrine train configs/fashion-cnn.toml --set train.epochs=3 --backend flex
  vitrine train --resume runs/fashion-cnn
  vitrine eval runs/quickstart --data my-photos/test
  vitrine predict runs/quickstart photo.jpg more-photos/ --top-k 3
  vitrine export runs/quickstart --format safetensors --out fashion-cnn.safetensors
  vitrine train configs/text-quickstart.toml
  vitrine predict runs/text-quickstart --text \"物流很快，质量不错\" --text \"Battery died in a week\"
  vitrine eval runs/reviews-csv --data more-reviews.csv
  vitrine train configs/cgan.toml
  vitrine generate runs/cgan --n 64 --class Sneaker --seed 7 --out sneakers.png
  vitrine reconstruct runs/conv-ae photo.png more-photos/ --out reconstructions.png
  vitrine interpolate runs/conv-ae shoe.png bag.png --steps 10 --out strip.png";

/// Train, evaluate, export and run deep-learning models for product photos, customer reviews and
/// generated product imagery.
#[derive(Parser)]
#[command(name = "vitrine", version, after_help = EXAMPLES, subcommand_required = true, arg_required_else_help = true)]
struct Vitrine;

#[derive(Args, Clone, Copy)]
pub struct BackendArg {
    /// Where to compute: auto (a hardware GPU, else flex), flex, ndarray, wgpu, cuda (builds with
    /// the `cuda` feature) or tch (builds with `tch`; a speed diagnostic). Overrides the config.
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<BackendChoice>,
}

/// `vitrine train`.
#[derive(Args)]
pub struct TrainArgs {
    /// The experiment config (TOML).
    #[arg(required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Override a config value, e.g. --set train.epochs=3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The run folder to create [default: runs/<config name>, numbered if taken].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run from its last complete epoch, with its saved config.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["config", "out", "set"])]
    pub resume: Option<PathBuf>,
    /// With --resume: train up to this many epochs in all (the run's config is updated).
    #[arg(long, value_name = "N", requires = "resume")]
    pub epochs: Option<usize>,
    /// Fail on the first unreadable input instead of skipping it (same as --set run.strict=true).
    #[arg(long)]
    pub strict: bool,
    /// Class names in the data that differ from the config's: a TOML file of "name" = "class"
    /// lines (same as --set data.class_map=FILE).
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub class_map: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArg,
}

/// `vitrine config show`.
#[derive(Args)]
pub struct ConfigShowArgs {
    pub config: PathBuf,
    /// Override a config value, e.g. --set train.epochs=3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// What every command on a trained run takes.
#[derive(Args)]
pub struct RunArgs {
    /// The run folder.
    pub run: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Fail on the first unreadable input instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Class names in the data (folders, labels) that differ from the run's, beyond case, spaces,
    /// hyphens, underscores and slashes: a TOML file of "name" = "class" lines. Predictions are
    /// shown under these names.
    #[arg(long, value_name = "FILE")]
    pub class_map: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArg,
}

impl RunArgs {
    /// The `--class-map` file, read (an empty map without one).
    pub fn class_map(&self) -> anyhow::Result<ClassMap> {
        Ok(self.class_map.as_deref().map(ClassMap::read).transpose()?.unwrap_or_default())
    }
}

/// `vitrine eval`.
#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub on: RunArgs,
    /// Held-out data. Images: a folder (one sub-folder per class), or an IDX images file and its
    /// labels file. Text: a CSV/TSV/JSONL file with the run's column names, or one `<class>.txt`
    /// file per class.
    #[arg(long, num_args = 1.., required = true, value_name = "PATH")]
    pub data: Vec<PathBuf>,
}

/// `vitrine predict`.
#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub on: RunArgs,
    /// Image runs: image files, or folders searched recursively.
    pub inputs: Vec<PathBuf>,
}

/// `vitrine export`.
#[derive(Args)]
pub struct ExportArgs {
    /// The run folder.
    pub run: PathBuf,
    /// burnpack (Burn) or safetensors (PyTorch state_dict names).
    #[arg(long, default_value = "safetensors")]
    pub format: WeightsFormat,
    /// The file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `vitrine bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// The model to measure (see the list above).
    #[arg(long, default_value = "fashion-cnn")]
    pub model: String,
    /// One backend, or every CPU backend plus wgpu where a hardware GPU exists [default: all].
    #[arg(long)]
    pub backend: Option<BackendChoice>,
    /// Examples per step [default: the model's reference batch size].
    #[arg(long, value_parser = args::at_least_one)]
    pub batch_size: Option<usize>,
    /// Untimed steps before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed steps at most (of training, then of inference).
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Stop timing a phase after this many seconds (slow backends still time two steps).
    #[arg(long, default_value_t = 20.0, value_parser = args::positive_seconds)]
    pub seconds: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Classifiers: data-parallel training over these devices (as `run.devices`), e.g.
    /// `cuda:0,cuda:1`, each batch split between them; measured in this process, as JSON.
    #[arg(long, value_delimiter = ',', conflicts_with = "backend")]
    pub devices: Vec<String>,
    /// Internal: measure one backend in this process and print JSON.
    #[arg(long, hide = true)]
    pub single: bool,
}

/// The whole command line: the shared verbs with every family's flags, then every family's
/// own commands (each taking the run it applies to first).
pub fn command(families: &[&dyn Family]) -> Command {
    let gather = |args_of: &dyn Fn(&dyn Family) -> Vec<clap::Arg>| {
        let mut args: Vec<clap::Arg> = Vec::new();
        for family in families {
            for arg in args_of(*family) {
                // Families share some flags (`--confusion-png`, `--seed`): the first definition serves all.
                if !args.iter().any(|a| a.get_id() == arg.get_id()) {
                    args.push(arg);
                }
            }
        }
        args
    };
    let models: Vec<&str> = families.iter().flat_map(|f| f.models()).collect();
    let mut cli = Vitrine::command()
        .subcommand(TrainArgs::augment_args(Command::new("train").about("Train a model from a config file into a run folder (or continue one with --resume)")))
        .subcommand(
            Command::new("config")
                .about("Inspect configs")
                .subcommand_required(true)
                .subcommand(ConfigShowArgs::augment_args(Command::new("show").about("Print the resolved config with every default filled in"))),
        )
        .subcommand(
            EvalArgs::augment_args(Command::new("eval").about(
                "Evaluate a trained run on held-out data: classifiers' accuracy, macro-F1, AUROC (two classes), per-class scores and \
                 confusion matrix; an autoencoder's MSE and PSNR; a GAN's Fréchet distance and class match",
            ))
            .args(gather(&|f| f.eval_args())),
        )
        .subcommand(
            PredictArgs::augment_args(Command::new("predict").about("Predict the classes of images, or the sentiment of texts, with a trained run"))
                .args(gather(&|f| f.predict_args())),
        )
        .subcommand(ExportArgs::augment_args(Command::new("export").about("Export a trained run's weights as burnpack or safetensors (PyTorch names)")))
        .subcommand(
            BenchArgs::augment_args(Command::new("bench").about("Measure training and inference throughput and peak memory per backend"))
                .after_help(format!("Models: {}", models.join(", ")))
                .args(gather(&|f| f.bench_args())),
        )
        .subcommand(Command::new("devices").about("List the wgpu adapters this machine has and what `--backend auto` picks"));
    for family in families {
        for own in family.commands() {
            // The run comes first, then the command's own arguments.
            let mut command = RunArgs::augment_args(Command::new(own.get_name().to_string()));
            if let Some(about) = own.get_about() {
                command = command.about(about.clone());
            }
            for arg in own.get_arguments() {
                command = command.arg(arg.clone());
            }
            cli = cli.subcommand(command);
        }
    }
    cli
}
