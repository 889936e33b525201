//! `vitrine`: train, evaluate, export and run product-image models from the command line.
//! Parsing and printing only; the work happens in the library crates.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use vitrine_core::backend::{BackendChoice, ComputeDevice, gpu_adapters, select_device};
use vitrine_core::config::peek_task;
use vitrine_core::export::WeightsFormat;
use vitrine_core::run_dir::{CONFIG_FILE, RunDir};
use vitrine_image::inference::{TrainedRun, evaluate, export, predict};
use vitrine_image::model::Architecture;
use vitrine_image::training::{ImageConfig, TASK as IMAGE_TASK, train};

const EXAMPLES: &str = "Examples:
  vitrine train configs/quickstart.toml
  vitrine train configs/fashion-cnn.toml --set train.epochs=3 --backend flex
  vitrine train --resume runs/fashion-cnn
  vitrine eval runs/quickstart --data my-photos/test
  vitrine predict runs/quickstart photo.jpg more-photos/ --top-k 3
  vitrine export runs/quickstart --format safetensors --out fashion-cnn.safetensors";

/// Train, evaluate, export and run deep-learning models for product imagery.
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
    /// Evaluate a trained run on labelled data: accuracy, macro-F1, per-class scores, confusion matrix.
    Eval(EvalArgs),
    /// Predict the classes of images with a trained run.
    Predict(PredictArgs),
    /// Export a trained run's weights as burnpack or safetensors (PyTorch names).
    Export(ExportArgs),
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
    /// Fail on the first unreadable image instead of skipping it (same as --set run.strict=true).
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
    /// An image folder (one sub-folder per class), or an IDX images file and its labels file.
    #[arg(long, num_args = 1..=2, required = true, value_name = "PATH")]
    data: Vec<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Where to draw the confusion matrix [default: <run>/eval-confusion.png].
    #[arg(long, value_name = "FILE")]
    confusion_png: Option<PathBuf>,
    /// Fail on the first unreadable image instead of skipping it.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    backend: BackendArg,
}

#[derive(Args)]
struct PredictArgs {
    /// The run folder.
    run: PathBuf,
    /// Image files, or folders searched recursively.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
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
struct BenchArgs {
    /// fashion-cnn or resnet-small.
    #[arg(long, default_value = "fashion-cnn")]
    model: String,
    /// One backend, or every CPU backend plus wgpu where a hardware GPU exists [default: all].
    #[arg(long)]
    backend: Option<BackendChoice>,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
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
            check_task(&config)?;
            print!("{}", ImageConfig::load(&config, &set)?.to_toml()?);
            Ok(())
        }
        Command::Eval(args) => {
            let mut trained = open_run(&args.run)?;
            trained.config.run.strict |= args.strict;
            let compute = device_for(args.backend.backend, &trained.config)?;
            let png = args.confusion_png.unwrap_or_else(|| trained.run.file("eval-confusion.png"));
            let (scores, report) = evaluate(&trained, &args.data, &compute.device, Some(&png))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&scores)?);
            } else {
                if let Some(line) = report.summary() {
                    println!("data: {line}");
                }
                print!("{}", scores.to_text(&trained.classes));
                println!("confusion matrix drawn to {}", png.display());
            }
            Ok(())
        }
        Command::Predict(args) => {
            let trained = open_run(&args.run)?;
            let compute = device_for(args.backend.backend, &trained.config)?;
            let predictions = predict(&trained, &args.inputs, args.top_k.max(1), &compute.device, args.strict)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&predictions)?);
            } else {
                for p in predictions {
                    let top: Vec<String> = p.top.iter().map(|c| format!("{} {:.1}%", c.class, 100.0 * c.probability)).collect();
                    println!("{}: {}", p.path.display(), top.join(", "));
                }
            }
            Ok(())
        }
        Command::Export(args) => {
            let trained = open_run(&args.run)?;
            export(&trained, args.format, &args.out, &burn::tensor::Device::flex())?;
            println!("wrote {}", args.out.display());
            Ok(())
        }
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

fn train_command(args: TrainArgs) -> Result<()> {
    let (mut config, run, resuming) = match &args.resume {
        Some(path) => {
            let run = RunDir::open(path)?;
            let config = ImageConfig::load(&run.file(CONFIG_FILE), &[])?;
            (config, run, true)
        }
        None => {
            let path = args.config.as_deref().expect("clap requires a config without --resume");
            check_task(path)?;
            let config = ImageConfig::load(path, &args.set)?;
            let out = match args.out {
                Some(out) => out,
                None => {
                    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
                    RunDir::unique_path(Path::new("runs"), &stem)
                }
            };
            (config, RunDir::create(&out)?, false)
        }
    };
    config.run.strict |= args.strict;
    let compute = device_for(args.backend.backend, &config)?;
    println!("device: {}", compute.description);
    train(&config, &run, &compute, resuming)?;
    Ok(())
}

fn check_task(config: &Path) -> Result<()> {
    let task = peek_task(config)?;
    if task != IMAGE_TASK {
        bail!("{}: unknown task `{task}`; this build supports: {IMAGE_TASK}", config.display());
    }
    Ok(())
}

fn open_run(path: &Path) -> Result<TrainedRun> {
    check_task(&RunDir::open(path)?.file(CONFIG_FILE))?;
    TrainedRun::open(path)
}

fn device_for(flag: Option<BackendChoice>, config: &ImageConfig) -> Result<ComputeDevice> {
    select_device(flag.unwrap_or(config.run.backend))
}

fn bench_command(args: BenchArgs) -> Result<()> {
    let arch: Architecture = serde_json::from_value(serde_json::Value::String(args.model.clone()))
        .with_context(|| format!("unknown model `{}`: expected fashion-cnn or resnet-small", args.model))?;
    if args.single {
        let compute = select_device(args.backend.unwrap_or(BackendChoice::Auto))?;
        let budget = std::time::Duration::from_secs_f64(args.seconds);
        let result = vitrine_image::bench::bench(arch, &compute, args.batch_size, args.warmup, args.steps, budget)?;
        let mut json = serde_json::to_value(&result)?;
        json["peak_memory_mib"] = serde_json::json!(peak_memory_mib());
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
            .args(["--batch-size", &args.batch_size.to_string(), "--warmup", &args.warmup.to_string()])
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
