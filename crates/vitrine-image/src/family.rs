//! The image-classification family as the `vitrine` binary sees it.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::prelude::*;
use clap::{Arg, ArgMatches, value_parser};
use vitrine_core::bench::BenchResult;
use vitrine_core::config::{ConfigFile, RunSection};
use vitrine_core::export::WeightsFormat;
use vitrine_core::family::{BenchRequest, Configured, Experiment, Family, Output, TrainedRun, UseContext, args};
use vitrine_core::run_dir::RunDir;

use crate::config::{Architecture, TASK, resolve};
use crate::inference::{ImageRun, evaluate, export, predict};

/// Product-image classification: `fashion-cnn`, `resnet-small` and the torchvision backbones.
pub struct ImageFamily;

impl Family for ImageFamily {
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
        Ok(Box::new(ImageRun::open_with(run, config)?))
    }

    fn bench(&self, model: &str, request: &BenchRequest) -> Result<BenchResult> {
        let arch = Architecture::ALL.into_iter().find(|a| a.name() == model).expect("the binary asks only for our models");
        match args::value::<PathBuf>(request.args, "data") {
            Some(folder) => {
                let size = args::value::<usize>(request.args, "image_size").unwrap_or(224);
                crate::bench::bench_folder(arch, &folder, size, request.compute, request.batch_size, request.timing)
            }
            None => crate::bench::bench(arch, request.compute, request.batch_size, request.timing),
        }
    }

    fn bench_args(&self) -> Vec<Arg> {
        vec![
            Arg::new("data")
                .long("data")
                .value_name("FOLDER")
                .value_parser(value_parser!(PathBuf))
                .help("Image models: stream photos from this folder (one sub-folder per class) and time the loader alone too"),
            Arg::new("image_size")
                .long("image-size")
                .value_name("PIXELS")
                .value_parser(args::at_least_one)
                .default_value("224")
                .help("Image models with --data: the input size photos are cropped and resized to"),
        ]
    }

    fn eval_args(&self) -> Vec<Arg> {
        vec![args::mirror(), args::confusion_png()]
    }

    fn predict_args(&self) -> Vec<Arg> {
        vec![
            Arg::new("top_k").long("top-k").value_parser(value_parser!(usize)).default_value("3").help("Image runs: how many classes to show per image"),
            args::mirror(),
        ]
    }
}

impl ImageRun {
    /// `--mirror` suits runs that saw mirrored images in training: say so when this one did not.
    fn note_mirror(&self, mirror: bool, ctx: &UseContext) {
        if mirror && !self.config.data.augment.flip {
            ctx.reporter.warn(&format!(
                "{} was trained without data.augment.flip; mirrored images are new to it and may lower its accuracy",
                self.run.root().display()
            ));
        }
    }
}

impl TrainedRun for ImageRun {
    fn run(&self) -> &RunDir {
        &self.run
    }

    fn run_section(&self) -> &RunSection {
        &self.config.run
    }

    fn evaluate(&self, data: &[PathBuf], matches: &ArgMatches, ctx: &UseContext) -> Result<Output> {
        let mirror = args::flag(matches, "mirror");
        self.note_mirror(mirror, ctx);
        let png = args::value::<PathBuf>(matches, "confusion_png").unwrap_or_else(|| self.run.file("eval-confusion.png"));
        let (scores, report) = evaluate(self, data, mirror, Some(&png), ctx)?;
        if let Some(line) = report.summary() {
            ctx.reporter.info(&format!("data: {line}"));
        }
        let text = format!("{}confusion matrix drawn to {}\n", scores.to_text(&self.classes), png.display());
        Output::of(text, &scores)
    }

    fn predict(&self, inputs: &[PathBuf], matches: &ArgMatches, ctx: &UseContext) -> Result<Output> {
        if inputs.is_empty() {
            bail!("give image files or folders to predict");
        }
        let mirror = args::flag(matches, "mirror");
        self.note_mirror(mirror, ctx);
        let top_k = args::value::<usize>(matches, "top_k").unwrap_or(3).max(1);
        let predictions = predict(self, inputs, top_k, mirror, ctx)?;
        let text: String = predictions
            .iter()
            .map(|p| {
                let top: Vec<String> = p.top.iter().map(|c| format!("{} {:.1}%", c.class, 100.0 * c.probability)).collect();
                format!("{}: {}\n", p.path.display(), top.join(", "))
            })
            .collect();
        Output::of(text, &predictions)
    }

    fn export(&self, format: WeightsFormat, out: &Path, device: &Device) -> Result<()> {
        export(self, format, out, device)
    }
}
