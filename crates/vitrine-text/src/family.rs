//! The review-sentiment family as the `vitrine` binary sees it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::{Arg, ArgAction, ArgMatches, value_parser};
use vitrine_core::bench::BenchResult;
use vitrine_core::config::{ConfigFile, RunSection};
use vitrine_core::export::WeightsFormat;
use vitrine_core::family::{BenchRequest, Configured, Experiment, Family, Output, TrainedRun, UseContext, args};
use vitrine_core::run_dir::RunDir;

use crate::baseline::BASELINE;
use crate::config::{Architecture, TASK, resolve};
use crate::inference::{TextPrediction, TextRun, evaluate, export, predict};

/// Review sentiment: `text-ngram`, `text-lstm-attn`, `text-gru-attn`, `text-transformer` and
/// `text-bert` (a pretrained encoder the user supplies).
pub struct TextFamily;

impl Family for TextFamily {
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
        Ok(Box::new(TextRun::open_with(run, config)?))
    }

    fn bench(&self, model: &str, request: &BenchRequest) -> Result<BenchResult> {
        let arch = Architecture::ALL.into_iter().find(|a| a.name() == model).expect("the binary asks only for our models");
        if arch == Architecture::Bert {
            bail!("text-bert's speed depends on the encoder you supply: time a short run instead (vitrine train CONFIG --set train.epochs=1)");
        }
        let seq_len = args::value::<usize>(request.args, "seq_len").unwrap_or(64);
        let mut result = crate::bench::bench(arch, request.compute, request.batch_size.unwrap_or(64), seq_len, request.timing)?;
        result.extra.insert("seq_len".into(), seq_len.into());
        Ok(result)
    }

    fn eval_args(&self) -> Vec<Arg> {
        vec![args::confusion_png()]
    }

    fn predict_args(&self) -> Vec<Arg> {
        vec![
            Arg::new("text").long("text").value_name("TEXT").action(ArgAction::Append).help("Text runs: a text to classify (repeatable)"),
            Arg::new("file").long("file").value_name("FILE").value_parser(value_parser!(PathBuf)).help("Text runs: a file with one text per line"),
            Arg::new("top_tokens")
                .long("top-tokens")
                .value_parser(value_parser!(usize))
                .default_value("5")
                .help("Text runs: how many of the most-attended tokens to show per text"),
        ]
    }

    fn bench_args(&self) -> Vec<Arg> {
        vec![Arg::new("seq_len").long("seq-len").value_parser(args::at_least_one).default_value("64").help("Text models: tokens per text")]
    }
}

impl TrainedRun for TextRun {
    fn run(&self) -> &RunDir {
        &self.run
    }

    fn run_section(&self) -> &RunSection {
        &self.config.run
    }

    fn evaluate(&self, data: &[PathBuf], matches: &ArgMatches, ctx: &UseContext) -> Result<Output> {
        let png = args::value::<PathBuf>(matches, "confusion_png").unwrap_or_else(|| self.run.file("eval-confusion.png"));
        let evaluation = evaluate(self, data, ctx.class_map, ctx.device(), ctx.strict, Some(&png))?;
        for row in &evaluation.skipped {
            ctx.reporter.info(&format!("data: skipped {row}"));
        }
        let mut text = evaluation.scores.to_text(&self.classes);
        match evaluation.baseline_accuracy {
            Some(accuracy) => text += &format!("baseline accuracy {:.2}%: {BASELINE}, fitted on this run's training split\n", 100.0 * accuracy),
            None => text += "baseline: none (this run kept no training split to fit it on)\n",
        }
        text += &format!("confusion matrix drawn to {}\n", png.display());
        Output::of(text, &evaluation)
    }

    fn predict(&self, inputs: &[PathBuf], matches: &ArgMatches, ctx: &UseContext) -> Result<Output> {
        if !inputs.is_empty() {
            bail!("{} is a text run: give texts with --text \"...\" or --file reviews.txt", self.run.root().display());
        }
        let mut texts = args::values::<String>(matches, "text");
        if let Some(file) = args::value::<PathBuf>(matches, "file") {
            let content = std::fs::read_to_string(&file).with_context(|| format!("reading {} (UTF-8 text, one review per line)", file.display()))?;
            let before = texts.len();
            texts.extend(content.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
            if texts.len() == before {
                bail!("{} has no texts: it should hold one review per line", file.display());
            }
        }
        if texts.is_empty() {
            bail!("give texts to classify with --text \"...\" (repeatable) or --file reviews.txt");
        }
        let top_tokens = args::value::<usize>(matches, "top_tokens").unwrap_or(5);
        let mut predictions = predict(self, &texts, top_tokens, ctx.device())?;
        for p in &mut predictions {
            p.label = ctx.class_map.name_of(&p.label).to_string();
        }
        Output::of(predictions_text(&predictions), &predictions)
    }

    fn export(&self, format: WeightsFormat, out: &Path, device: &Device) -> Result<()> {
        export(self, format, out, device)
    }
}

/// Each text's label and probability, then the tokens it attended to most.
fn predictions_text(predictions: &[TextPrediction]) -> String {
    let mut out = String::new();
    for p in predictions {
        let tokens: Vec<String> = p.top_tokens.iter().map(|(tok, w)| format!("{tok} {:.0}%", 100.0 * w)).collect();
        out += &format!("{} {:.1}%  {}\n    attended to: {}\n", p.label, 100.0 * p.probability, p.text, tokens.join(", "));
    }
    out
}
