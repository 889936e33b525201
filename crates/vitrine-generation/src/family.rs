//! The generation family as the `vitrine` binary sees it, with its own commands: `generate`,
//! `reconstruct` and `interpolate`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::prelude::*;
use clap::{Arg, ArgMatches, Command, value_parser};
use vitrine_core::bench::BenchResult;
use vitrine_core::config::{ConfigFile, RunSection};
use vitrine_core::export::WeightsFormat;
use vitrine_core::family::{BenchRequest, Configured, Experiment, Family, Output, TrainedRun, UseContext, args};
use vitrine_core::run_dir::RunDir;

use crate::config::{Architecture, TASK, resolve};
use crate::grid::{save_each, save_grid};
use crate::inference::{GenerationRun, evaluate, export, generate, interpolate, reconstruct};

/// Creative generation: `conv-ae` (optionally variational) and `dcgan` (optionally conditional).
pub struct GenerationFamily;

impl Family for GenerationFamily {
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
        Ok(Box::new(GenerationRun::open_with(run, config)?))
    }

    fn bench(&self, model: &str, request: &BenchRequest) -> Result<BenchResult> {
        let arch = Architecture::ALL.into_iter().find(|a| a.name() == model).expect("the binary asks only for our models");
        crate::bench::bench(arch, request.compute, request.batch_size.unwrap_or(128), request.timing)
    }

    fn eval_args(&self) -> Vec<Arg> {
        vec![
            Arg::new("classifier")
                .long("classifier")
                .value_name("RUN")
                .value_parser(value_parser!(PathBuf))
                .help("GAN and VAE runs: the image-classifier run whose features score the samples [default: the config's eval.classifier]"),
            args::seed(),
        ]
    }

    fn commands(&self) -> Vec<Command> {
        let out = |what: &str| Arg::new("out").long("out").value_name("FILE").value_parser(value_parser!(PathBuf)).help(what.to_string());
        vec![
            Command::new("generate")
                .about("Generate images with a GAN (of one class, or every class in turn) or a variational autoencoder")
                .arg(Arg::new("n").long("n").value_parser(value_parser!(usize)).default_value("64").help("How many images"))
                .arg(
                    Arg::new("class")
                        .long("class")
                        .value_name("NAME")
                        .help("Conditional GANs: the class to draw (by name) [default: every class in turn, one per row]"),
                )
                .arg(args::seed().help("Seed of the noise: the same seed gives the same images"))
                .arg(out("The grid to write [default: <run>/generated.png]").conflicts_with("out_dir"))
                .arg(
                    Arg::new("out_dir")
                        .long("out-dir")
                        .value_name("DIR")
                        .value_parser(value_parser!(PathBuf))
                        .help("Write each image as its own PNG into this folder instead of a grid"),
                )
                .arg(Arg::new("scale").long("scale").value_parser(value_parser!(u32)).default_value("2").help("Each pixel drawn as SCALE×SCALE pixels")),
            Command::new("reconstruct")
                .about("Reconstruct images with an autoencoder: originals above their reconstructions")
                .arg(Arg::new("inputs").required(true).num_args(1..).value_parser(value_parser!(PathBuf)).help("Image files, or folders searched recursively"))
                .arg(out("The grid to write [default: <run>/reconstructions.png]")),
            Command::new("interpolate")
                .about("Decode a strip of codes between the codes of two images with an autoencoder")
                .arg(Arg::new("from").required(true).value_parser(value_parser!(PathBuf)).help("The first image"))
                .arg(Arg::new("to").required(true).value_parser(value_parser!(PathBuf)).help("The last image"))
                .arg(Arg::new("steps").long("steps").value_parser(value_parser!(usize)).default_value("10").help("Images in the strip, both ends included"))
                .arg(out("The strip to write [default: <run>/interpolation.png]")),
        ]
    }
}

impl TrainedRun for GenerationRun {
    fn run(&self) -> &RunDir {
        &self.run
    }

    fn run_section(&self) -> &RunSection {
        &self.config.run
    }

    fn evaluate(&self, data: &[PathBuf], matches: &ArgMatches, ctx: &UseContext) -> Result<Output> {
        let classifier = args::value::<PathBuf>(matches, "classifier");
        let seed = args::value::<u64>(matches, "seed").unwrap_or(7);
        let (scores, report) = evaluate(self, data, classifier.as_deref(), seed, ctx)?;
        if let Some(line) = report.summary() {
            ctx.reporter.info(&format!("data: {line}"));
        }
        Output::of(scores.to_text(), &scores)
    }

    fn predict(&self, _inputs: &[PathBuf], _matches: &ArgMatches, _ctx: &UseContext) -> Result<Output> {
        bail!("{} is an image-generation run: use `vitrine generate`, `vitrine reconstruct` or `vitrine interpolate`", self.run.root().display())
    }

    fn export(&self, format: WeightsFormat, out: &Path, device: &Device) -> Result<()> {
        export(self, format, out, device)
    }

    fn command(&self, name: &str, matches: &ArgMatches, ctx: &UseContext) -> Result<Output> {
        let out = |default: &str| args::value::<PathBuf>(matches, "out").unwrap_or_else(|| self.run.file(default));
        let said = |text: String| Output { json: serde_json::json!({ "message": text.trim_end() }), text };
        match name {
            "generate" => {
                let n = args::value::<usize>(matches, "n").unwrap_or(64);
                let class = args::value::<String>(matches, "class");
                let seed = args::value::<u64>(matches, "seed").unwrap_or(7);
                let scale = args::value::<u32>(matches, "scale").unwrap_or(2);
                let generated = generate(self, n, class.as_deref(), seed, ctx.device())?;
                if let Some(dir) = args::value::<PathBuf>(matches, "out_dir") {
                    let files = save_each(&generated.images, &dir, "generated", scale)?;
                    return Ok(said(format!("wrote {} images to {}\n", files.len(), dir.display())));
                }
                let path = out("generated.png");
                save_grid(&generated.images, generated.columns, scale, &path)?;
                let what = class.map(|c| format!(" of {c}")).unwrap_or_default();
                Ok(said(format!("wrote {n} images{what} to {}\n", path.display())))
            }
            "reconstruct" => {
                let inputs = args::values::<PathBuf>(matches, "inputs");
                let result = reconstruct(self, &inputs, ctx)?;
                let path = out("reconstructions.png");
                save_grid(&result.grid, 8, 2, &path)?;
                Ok(said(format!(
                    "reconstructed {} images (MSE {:.5}); originals above reconstructions in {}\n",
                    result.files.len(),
                    result.mse,
                    path.display()
                )))
            }
            "interpolate" => {
                let (from, to) = (args::value::<PathBuf>(matches, "from").unwrap_or_default(), args::value::<PathBuf>(matches, "to").unwrap_or_default());
                let steps = args::value::<usize>(matches, "steps").unwrap_or(10);
                let strip = interpolate(self, &from, &to, steps, ctx)?;
                let path = out("interpolation.png");
                save_grid(&strip, steps, 2, &path)?;
                Ok(said(format!("wrote {steps} images from {} to {} into {}\n", from.display(), to.display(), path.display())))
            }
            _ => bail!("`{name}` does not apply to {}", self.run.root().display()),
        }
    }
}
