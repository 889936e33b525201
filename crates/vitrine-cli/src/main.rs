//! `vitrine`: train, evaluate, export and run product-image, review-sentiment and image-generation
//! models from the command line. Parsing, dispatch by task, and printing only; the work happens in the library crates.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use vitrine_core::backend::{BackendChoice, ComputeDevice, gpu_adapters, select_device};
use vitrine_core::bench::Timing;
use vitrine_core::config::{ExperimentConfig, RunSection, peek_task};
use vitrine_core::export::WeightsFormat;
use vitrine_core::report::RunReport;
use vitrine_core::run_dir::{CONFIG_FILE, RunDir};
use vitrine_image::inference::TrainedRun;
use vitrine_image::training::{ImageConfig, TASK as IMAGE_TASK};
use vitrine_text::inference::TrainedTextRun;
use vitrine_generation::inference::TrainedGenerationRun;
use vitrine_generation::training::TASK as GENERATION_TASK;
use vitrine_text::training::TASK as TEXT_TASK;

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
#[command(name = "vitrine", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a config file into a run folder (or continue one with --resume).
    Train(TrainArgs),
    /// Inspect configs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Evaluate a trained run on held-out data: classifiers' accuracy, macro-F1, AUROC (two classes), per-class
    /// scores and confusion matrix; an autoencoder's MSE and PSNR; a GAN's Fréchet distance and class match.
    Eval(EvalArgs),
    /// Predict the classes of images, or the sentiment of texts, with a trained run.
    Predict(PredictArgs),
    /// Export a trained run's weights as burnpack or safetensors (PyTorch names).
    Export(ExportArgs),
    /// Generate images with a GAN (of one class, or every class in turn) or a variational autoencoder.
    Generate(GenerateArgs),
    /// Reconstruct images with an autoencoder: originals above their reconstructions.
    Reconstruct(ReconstructArgs),
    /// Decode a strip of codes between the codes of two images with an autoencoder.
    Interpolate(InterpolateArgs),
    /// Measure training and inference throughput and peak memory per backend.
    Bench(BenchArgs),
    /// List the wgpu adapters this machine has and what `--backend auto` picks.
    Devices,
}

#[derive(Args)]
struct BackendArg {
    /// Where to compute: auto (a hardware GPU, else flex), flex, ndarray or wgpu. Overrides the config.
    #[arg(long, value_name = "BACKEND")]
    backend: Option<BackendChoice>,
}

#[derive(Args)]
struct TrainArgs {
    /// The experiment config (TOML).
    #[arg(required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Override a config value, e.g. --set train.epochs=3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The run folder to create [default: runs/<config name>, numbered if taken].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue an interrupted run from its last complete epoch, with its saved config.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["config", "out", "set"])]
    resume: Option<PathBuf>,
    /// With --resume: train up to this many epochs in all (the run's config is updated).
    #[arg(long, value_name = "N", requires = "resume")]
    epochs: Option<usize>,
    /// Fail on the first unreadable image or bad text row instead of skipping it (same as --set run.strict=true).
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    backend: BackendArg,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the resolved config with every default filled in.
    Show {
        config: PathBuf,
        /// Override a config value, e.g. --set train.epochs=3 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

#[derive(Args)]
struct EvalArgs {
    /// The run folder.
    run: PathBuf,
    /// Images: a folder (one sub-folder per class), or an IDX images file and its labels file.
    /// Text: a CSV/TSV/JSONL file with the run's column names, or one `<class>.txt` file per class.
    #[arg(long, num_args = 1.., required = true, value_name = "PATH")]
    data: Vec<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// GAN and VAE runs: the image-classifier run whose features score the samples [default: the config's eval.classifier].
    #[arg(long, value_name = "RUN")]
    classifier: Option<PathBuf>,
    /// GAN and VAE runs: seed of the generated samples.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Image classifiers: average each image's prediction with its mirror image's (test-time augmentation).
    #[arg(long)]
    mirror: bool,
    /// Where to draw the confusion matrix [default: <run>/eval-confusion.png].
    #[arg(long, value_name = "FILE")]
    confusion_png: Option<PathBuf>,
    /// Fail on the first unreadable image or bad text row instead of skipping it.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    backend: BackendArg,
}

#[derive(Args)]
struct PredictArgs {
    /// The run folder.
    run: PathBuf,
    /// Image runs: image files, or folders searched recursively.
    inputs: Vec<PathBuf>,
    /// Text runs: a text to classify (repeatable).
    #[arg(long, value_name = "TEXT")]
    text: Vec<String>,
    /// Text runs: a file with one text per line.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Image runs: how many classes to show per image.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Image runs: average each image's prediction with its mirror image's (test-time augmentation).
    #[arg(long)]
    mirror: bool,
    /// Text runs: how many of the most-attended tokens to show per text.
    #[arg(long, default_value_t = 5)]
    top_tokens: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Fail on the first unreadable file instead of skipping it.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    backend: BackendArg,
}

#[derive(Args)]
struct ExportArgs {
    /// The run folder.
    run: PathBuf,
    /// burnpack (Burn) or safetensors (PyTorch state_dict names).
    #[arg(long, default_value = "safetensors")]
    format: WeightsFormat,
    /// The file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Args)]
struct GenerateArgs {
    /// The run folder (a dcgan run, or a conv-ae run trained with model.variational = true).
    run: PathBuf,
    /// How many images.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Conditional GANs: the class to draw (by name) [default: every class in turn, one per row].
    #[arg(long, value_name = "NAME")]
    class: Option<String>,
    /// Seed of the noise: the same seed gives the same images.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The grid to write [default: <run>/generated.png].
    #[arg(long, value_name = "FILE", conflicts_with = "out_dir")]
    out: Option<PathBuf>,
    /// Write each image as its own PNG into this folder instead of a grid.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Each pixel drawn as SCALE×SCALE pixels.
    #[arg(long, default_value_t = 2)]
    scale: u32,
    #[command(flatten)]
    backend: BackendArg,
}

#[derive(Args)]
struct ReconstructArgs {
    /// The run folder (a conv-ae run).
    run: PathBuf,
    /// Image files, or folders searched recursively.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The grid to write [default: <run>/reconstructions.png].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Fail on the first unreadable file instead of skipping it.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    backend: BackendArg,
}

#[derive(Args)]
struct InterpolateArgs {
    /// The run folder (a conv-ae run).
    run: PathBuf,
    /// The first image.
    from: PathBuf,
    /// The last image.
    to: PathBuf,
    /// Images in the strip, both ends included.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// The strip to write [default: <run>/interpolation.png].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArg,
}

#[derive(Args)]
struct BenchArgs {
    /// fashion-cnn, resnet-small, text-lstm-attn, text-gru-attn, text-transformer, conv-ae or dcgan.
    #[arg(long, default_value = "fashion-cnn")]
    model: String,
    /// One backend, or every CPU backend plus wgpu where a hardware GPU exists [default: all].
    #[arg(long)]
    backend: Option<BackendChoice>,
    /// Examples per step [default: 128 for images, 64 for text].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Text models: tokens per text.
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Untimed steps before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps at most (of training, then of inference).
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Stop timing a phase after this many seconds (slow backends still time two steps).
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: measure one backend in this process and print JSON.
    #[arg(long, hide = true)]
    single: bool,
}

fn main() -> ExitCode {
    // Anything that asks burn for its default device stays on the CPU rather than probing GPUs;
    // the device for real work is always chosen explicitly. Set before any thread starts.
    if std::env::var_os("BURN_DEVICE").is_none() {
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    // Probing Vulkan adapters on a headless machine makes Mesa's Wayland client print
    // "XDG_RUNTIME_DIR is invalid or not set" errors; we never open a window.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train_command(args),
        Command::Config(ConfigCommand::Show { config, set }) => {
            let toml = resolved_config(&config, &set)?;
            print!("{toml}");
            Ok(())
        }
        Command::Eval(args) => eval_command(args),
        Command::Predict(args) => predict_command(args),
        Command::Export(args) => {
            let device = burn::tensor::Device::flex();
            match open_run(&args.run)? {
                Trained::Image(run) => vitrine_image::inference::export(&run, args.format, &args.out, &device)?,
                Trained::Text(run) => vitrine_text::inference::export(&run, args.format, &args.out, &device)?,
                Trained::Generation(run) => vitrine_generation::inference::export(&run, args.format, &args.out, &device)?,
            }
            println!("wrote {}", args.out.display());
            Ok(())
        }
        Command::Generate(args) => generate_command(args),
        Command::Reconstruct(args) => reconstruct_command(args),
        Command::Interpolate(args) => interpolate_command(args),
        Command::Bench(args) => bench_command(args),
        Command::Devices => {
            let adapters = gpu_adapters();
            if adapters.is_empty() {
                println!("no wgpu adapters (no Vulkan/Metal/DX12 driver found)");
            }
            for a in &adapters {
                let kind = if a.is_hardware() { "hardware" } else { "software" };
                println!("wgpu adapter: {} ({:?}, {:?}, {kind})", a.name, a.kind, a.api);
            }
            println!("--backend auto picks: {}", select_device(BackendChoice::Auto)?.description);
            Ok(())
        }
    }
}

/// The model family a config (by its `task`) belongs to.
enum Family {
    Image,
    Text,
    Generation,
}

fn family(config: &Path) -> Result<Family> {
    match peek_task(config)?.as_str() {
        IMAGE_TASK => Ok(Family::Image),
        TEXT_TASK => Ok(Family::Text),
        GENERATION_TASK => Ok(Family::Generation),
        task => bail!(
            "{}: unknown task `{task}`; this build supports: {IMAGE_TASK}, {TEXT_TASK}, {GENERATION_TASK}",
            config.display()
        ),
    }
}

/// A trained run of any family.
enum Trained {
    Image(TrainedRun),
    Text(TrainedTextRun),
    Generation(TrainedGenerationRun),
}

impl Trained {
    fn run_section(&self) -> &RunSection {
        match self {
            Self::Image(t) => &t.config.run,
            Self::Text(t) => &t.config.run,
            Self::Generation(t) => &t.config.run,
        }
    }
}

fn open_run(path: &Path) -> Result<Trained> {
    Ok(match family(&RunDir::open(path)?.file(CONFIG_FILE))? {
        Family::Image => Trained::Image(TrainedRun::open(path)?),
        Family::Text => Trained::Text(TrainedTextRun::open(path)?),
        Family::Generation => Trained::Generation(TrainedGenerationRun::open(path)?),
    })
}

/// Opens a generation run with the device to run it on.
fn open_generation_run(path: &Path, backend: Option<BackendChoice>) -> Result<(TrainedGenerationRun, ComputeDevice)> {
    let Trained::Generation(trained) = open_run(path)? else {
        bail!("{} is not an image-generation run (its config's task is not {GENERATION_TASK})", path.display());
    };
    let compute = device_for(backend, &trained.config.run)?;
    Ok((trained, compute))
}

fn device_for(flag: Option<BackendChoice>, run: &RunSection) -> Result<ComputeDevice> {
    select_device(flag.unwrap_or(run.backend))
}

fn train_command(args: TrainArgs) -> Result<()> {
    let (config_path, run, resuming) = match &args.resume {
        Some(path) => {
            let run = RunDir::open(path)?;
            (run.file(CONFIG_FILE), run, true)
        }
        None => {
            let path = args.config.clone().expect("clap requires a config without --resume");
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
            let out = args.out.clone().unwrap_or_else(|| RunDir::unique_path(Path::new("runs"), &stem));
            // Parse before creating the run folder, so a bad config leaves nothing behind.
            resolved_config(&path, &args.set)?;
            (path, RunDir::create(&out)?, false)
        }
    };
    let overrides = match (resuming, args.epochs) {
        (true, Some(epochs)) => {
            // Rewrite the saved config so later resumes and the report agree on the length.
            run.write(CONFIG_FILE, resolved_config(&config_path, &[format!("train.epochs={epochs}")])?)?;
            println!("{}: training up to epoch {epochs}", run.root().display());
            Vec::new()
        }
        (true, None) => Vec::new(),
        (false, _) => args.set.clone(),
    };
    match family(&config_path)? {
        Family::Image => train_family(ImageConfig::load(&config_path, &overrides)?, vitrine_image::training::train, &args, &run, resuming),
        Family::Text => {
            train_family(vitrine_text::training::load_config(&config_path, &overrides)?, vitrine_text::training::train, &args, &run, resuming)
        }
        Family::Generation => train_family(
            vitrine_generation::training::load_config(&config_path, &overrides)?,
            vitrine_generation::training::train,
            &args,
            &run,
            resuming,
        ),
    }
}

/// Trains one family's config with the command line's `--strict` and `--backend` applied.
fn train_family<D, M>(
    mut config: ExperimentConfig<D, M>,
    train: fn(&ExperimentConfig<D, M>, &RunDir, &ComputeDevice, bool) -> Result<RunReport>,
    args: &TrainArgs,
    run: &RunDir,
    resuming: bool,
) -> Result<()> {
    config.run.strict |= args.strict;
    let compute = device_for(args.backend.backend, &config.run)?;
    println!("device: {}", compute.description);
    train(&config, run, &compute, resuming)?;
    Ok(())
}

/// A config file as its family reads it, with defaults and `overrides` applied, as TOML.
fn resolved_config(path: &Path, overrides: &[String]) -> Result<String> {
    match family(path)? {
        Family::Image => ImageConfig::load(path, overrides)?.to_toml(),
        Family::Text => vitrine_text::training::load_config(path, overrides)?.to_toml(),
        Family::Generation => vitrine_generation::training::load_config(path, overrides)?.to_toml(),
    }
}

fn eval_command(args: EvalArgs) -> Result<()> {
    let mut trained = open_run(&args.run)?;
    let compute = device_for(args.backend.backend, trained.run_section())?;
    check_mirror(args.mirror, &trained, &args.run)?;
    let (scores, classes, png, skipped) = match &mut trained {
        Trained::Image(t) => {
            t.config.run.strict |= args.strict;
            let png = args.confusion_png.clone().unwrap_or_else(|| t.run.file("eval-confusion.png"));
            let (scores, report) = vitrine_image::inference::evaluate(t, &args.data, &compute.device, args.mirror, Some(&png))?;
            (scores, t.classes.clone(), png, report.summary().into_iter().collect::<Vec<_>>())
        }
        Trained::Text(t) => {
            t.config.run.strict |= args.strict;
            let png = args.confusion_png.clone().unwrap_or_else(|| t.run.file("eval-confusion.png"));
            let (scores, skipped) = vitrine_text::inference::evaluate(t, &args.data, &compute.device, Some(&png))?;
            let lines = skipped.iter().map(|r| format!("skipped {}: line {}: {}", r.path.display(), r.line, r.reason)).collect();
            (scores, t.classes.clone(), png, lines)
        }
        Trained::Generation(t) => {
            t.config.run.strict |= args.strict;
            let (scores, report) =
                vitrine_generation::inference::evaluate(t, &args.data, args.classifier.as_deref(), args.seed, &compute.device)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&scores)?);
            } else {
                if let Some(line) = report.summary() {
                    println!("data: {line}");
                }
                print!("{}", scores.to_text());
            }
            return Ok(());
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&scores)?);
    } else {
        for line in skipped {
            println!("data: {line}");
        }
        print!("{}", scores.to_text(&classes));
        println!("confusion matrix drawn to {}", png.display());
    }
    Ok(())
}

/// `--mirror` is for image classifiers, and suits those that saw mirrored images in training:
/// refuse it for other runs, and say so when this one did not.
fn check_mirror(mirror: bool, trained: &Trained, run: &Path) -> Result<()> {
    match trained {
        _ if !mirror => {}
        Trained::Image(t) if !t.config.data.augment.flip => {
            eprintln!("note: {} was trained without data.augment.flip; mirrored images are new to it and may lower its accuracy", run.display());
        }
        Trained::Image(_) => {}
        _ => bail!("--mirror applies to image-classification runs only"),
    }
    Ok(())
}

fn predict_command(args: PredictArgs) -> Result<()> {
    let trained = open_run(&args.run)?;
    check_mirror(args.mirror, &trained, &args.run)?;
    let compute = device_for(args.backend.backend, trained.run_section())?;
    match &trained {
        Trained::Image(t) => {
            if !args.text.is_empty() || args.file.is_some() {
                bail!("{} is an image run: give image files or folders, not --text/--file", args.run.display());
            }
            if args.inputs.is_empty() {
                bail!("give image files or folders to predict");
            }
            let predictions = vitrine_image::inference::predict(t, &args.inputs, args.top_k.max(1), args.mirror, &compute.device, args.strict)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&predictions)?);
            } else {
                for p in predictions {
                    let top: Vec<String> = p.top.iter().map(|c| format!("{} {:.1}%", c.class, 100.0 * c.probability)).collect();
                    println!("{}: {}", p.path.display(), top.join(", "));
                }
            }
        }
        Trained::Text(t) => {
            if !args.inputs.is_empty() {
                bail!("{} is a text run: give texts with --text \"...\" or --file reviews.txt", args.run.display());
            }
            let mut texts = args.text.clone();
            if let Some(file) = &args.file {
                let content = std::fs::read_to_string(file).with_context(|| format!("reading {} (UTF-8 text, one review per line)", file.display()))?;
                texts.extend(content.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
            }
            if texts.is_empty() {
                bail!("give texts to classify with --text \"...\" (repeatable) or --file reviews.txt");
            }
            let predictions = vitrine_text::inference::predict(t, &texts, args.top_tokens, &compute.device)?;
            print_text_predictions(&predictions, args.json)?;
        }
        Trained::Generation(_) => {
            bail!("{} is an image-generation run: use `vitrine generate`, `vitrine reconstruct` or `vitrine interpolate`", args.run.display())
        }
    }
    Ok(())
}

fn print_text_predictions(predictions: &[vitrine_text::inference::TextPrediction], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&predictions)?);
        return Ok(());
    }
    for p in predictions {
        let tokens: Vec<String> = p.top_tokens.iter().map(|(tok, w)| format!("{tok} {:.0}%", 100.0 * w)).collect();
        println!("{} {:.1}%  {}\n    attended to: {}", p.label, 100.0 * p.probability, p.text, tokens.join(", "));
    }
    Ok(())
}

fn generate_command(args: GenerateArgs) -> Result<()> {
    let (trained, compute) = open_generation_run(&args.run, args.backend.backend)?;
    let generated = vitrine_generation::inference::generate(&trained, args.n, args.class.as_deref(), args.seed, &compute.device)?;
    if let Some(dir) = &args.out_dir {
        let files = vitrine_generation::grid::save_each(&generated.images, dir, "generated", args.scale)?;
        println!("wrote {} images to {}", files.len(), dir.display());
        return Ok(());
    }
    let out = args.out.clone().unwrap_or_else(|| trained.run.file("generated.png"));
    vitrine_generation::grid::save_grid(&generated.images, generated.columns, args.scale, &out)?;
    let what = args.class.as_deref().map(|c| format!(" of {c}")).unwrap_or_default();
    println!("wrote {} images{what} to {}", args.n, out.display());
    Ok(())
}

fn reconstruct_command(args: ReconstructArgs) -> Result<()> {
    let (trained, compute) = open_generation_run(&args.run, args.backend.backend)?;
    let result = vitrine_generation::inference::reconstruct(&trained, &args.inputs, &compute.device, args.strict)?;
    let out = args.out.clone().unwrap_or_else(|| trained.run.file("reconstructions.png"));
    vitrine_generation::grid::save_grid(&result.grid, 8, 2, &out)?;
    println!("reconstructed {} images (MSE {:.5}); originals above reconstructions in {}", result.files.len(), result.mse, out.display());
    Ok(())
}

fn interpolate_command(args: InterpolateArgs) -> Result<()> {
    let (trained, compute) = open_generation_run(&args.run, args.backend.backend)?;
    let strip = vitrine_generation::inference::interpolate(&trained, &args.from, &args.to, args.steps, &compute.device)?;
    let out = args.out.clone().unwrap_or_else(|| trained.run.file("interpolation.png"));
    vitrine_generation::grid::save_grid(&strip, args.steps, 2, &out)?;
    println!("wrote {} images from {} to {} into {}", args.steps, args.from.display(), args.to.display(), out.display());
    Ok(())
}

/// A model `vitrine bench` can measure.
enum BenchModel {
    Image(vitrine_image::model::Architecture),
    Text(vitrine_text::model::Architecture),
    Generation(vitrine_generation::model::Architecture),
}

fn bench_command(args: BenchArgs) -> Result<()> {
    let name = serde_json::Value::String(args.model.clone());
    let model = if let Ok(arch) = serde_json::from_value(name.clone()) {
        BenchModel::Image(arch)
    } else if let Ok(arch) = serde_json::from_value(name.clone()) {
        BenchModel::Text(arch)
    } else if let Ok(arch) = serde_json::from_value(name) {
        BenchModel::Generation(arch)
    } else {
        bail!(
            "unknown model `{}`: expected fashion-cnn, resnet-small, text-lstm-attn, text-gru-attn, text-transformer, conv-ae or dcgan",
            args.model
        );
    };
    let batch_size = args.batch_size.unwrap_or(match model {
        BenchModel::Image(_) | BenchModel::Generation(_) => 128,
        BenchModel::Text(_) => 64,
    });
    if args.single {
        let compute = select_device(args.backend.unwrap_or(BackendChoice::Auto))?;
        let timing = Timing { warmup: args.warmup, steps: args.steps, budget: std::time::Duration::from_secs_f64(args.seconds) };
        let result = match model {
            BenchModel::Image(arch) => vitrine_image::bench::bench(arch, &compute, batch_size, timing)?,
            BenchModel::Text(arch) => vitrine_text::bench::bench(arch, &compute, batch_size, args.seq_len, timing)?,
            BenchModel::Generation(arch) => vitrine_generation::bench::bench(arch, &compute, batch_size, timing)?,
        };
        let mut json = serde_json::to_value(&result)?;
        json["peak_memory_mib"] = serde_json::json!(peak_memory_mib());
        if let BenchModel::Text(_) = model {
            json["seq_len"] = serde_json::json!(args.seq_len);
        }
        println!("{json}");
        return Ok(());
    }
    // Each backend runs in its own process so its peak memory is its own.
    let backends = match args.backend {
        Some(b) => vec![b],
        None => {
            let mut all = vec![BackendChoice::Flex, BackendChoice::Ndarray];
            if gpu_adapters().iter().any(|a| a.is_hardware()) {
                all.push(BackendChoice::Wgpu);
            } else if !args.json {
                println!("wgpu: skipped (no hardware adapter; --backend wgpu forces a software one)");
            }
            all
        }
    };
    let exe = std::env::current_exe()?;
    let mut results = Vec::new();
    for backend in backends {
        let output = std::process::Command::new(&exe)
            .args(["bench", "--single", "--model", &args.model, "--backend", &backend.to_string()])
            .args(["--batch-size", &batch_size.to_string(), "--seq-len", &args.seq_len.to_string()])
            .args(["--warmup", &args.warmup.to_string()])
            .args(["--steps", &args.steps.to_string(), "--seconds", &args.seconds.to_string()])
            .output()
            .context("starting the benchmark process")?;
        if !output.status.success() {
            bail!("bench on {backend} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let json: serde_json::Value = serde_json::from_str(line.trim().lines().last().unwrap_or_default())
            .with_context(|| format!("reading the {backend} result: {line}"))?;
        if !args.json {
            println!(
                "{:<8} train {:>7.1} samples/s  inference {:>8.1} samples/s  peak memory {:>6} MiB  ({})",
                backend,
                json["train_samples_per_sec"].as_f64().unwrap_or(0.0),
                json["inference_samples_per_sec"].as_f64().unwrap_or(0.0),
                json["peak_memory_mib"].as_u64().map_or("?".into(), |m| m.to_string()),
                json["device"].as_str().unwrap_or("")
            );
        }
        results.push(json);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}

/// The process's peak resident memory (Linux), in MiB.
fn peak_memory_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
