//! `vitrine train` and `vitrine config show`: a config read once, resolved by its family, trained.

use std::path::Path;

use anyhow::Result;
use vitrine_core::config::ConfigFile;
use vitrine_core::family::Experiment;
use vitrine_core::reporter::Reporter;
use vitrine_core::run_dir::{CONFIG_FILE, RunDir};
use vitrine_core::train::TrainContext;

use super::{device_for, family_of};
use crate::cli::{ConfigShowArgs, TrainArgs};
use crate::terminal::Terminal;

/// A config file as its family resolves it, with `overrides` applied.
fn resolve(file: &ConfigFile, overrides: &[String]) -> Result<Box<dyn Experiment>> {
    family_of(file)?.resolve(file, overrides)
}

pub fn show(args: &ConfigShowArgs) -> Result<()> {
    print!("{}", resolve(&ConfigFile::read(&args.config)?, &args.set)?.to_toml()?);
    Ok(())
}

pub fn train(args: &TrainArgs) -> Result<()> {
    let reporter = Terminal::new(false);
    let (mut experiment, run, resuming) = match &args.resume {
        Some(path) => {
            let run = RunDir::open(path)?;
            let file = ConfigFile::read(&run.file(CONFIG_FILE))?;
            let experiment = match args.epochs {
                Some(epochs) => {
                    let experiment = resolve(&file, &[format!("train.epochs={epochs}")])?;
                    // The saved config says how long the run is, for later resumes and the report.
                    run.write(CONFIG_FILE, experiment.to_toml()?)?;
                    reporter.info(&format!("{}: training up to epoch {epochs}", run.root().display()));
                    experiment
                }
                None => resolve(&file, &[])?,
            };
            (experiment, run, true)
        }
        None => {
            let path = args.config.as_deref().expect("clap requires a config without --resume");
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
            // Resolved before the run folder exists, so a bad config leaves nothing behind.
            let mut overrides = args.set.clone();
            if let Some(map) = &args.class_map {
                overrides.push(format!("data.class_map={:?}", map.display().to_string()));
            }
            let experiment = resolve(&ConfigFile::read(path)?, &overrides)?;
            let out = args.out.clone().unwrap_or_else(|| RunDir::unique_path(Path::new("runs"), &stem));
            (experiment, RunDir::create(&out)?, false)
        }
    };
    let section = experiment.run_section_mut();
    section.strict |= args.strict;
    let trained = device_for(args.backend.backend, section).and_then(|compute| {
        reporter.info(&format!("device: {}", compute.description));
        experiment.train(&TrainContext { run: &run, compute: &compute, resuming, reporter: &reporter })
    });
    if trained.is_err() && !resuming && !run.file("checkpoints/latest").exists() {
        // Failed before its first epoch (no such device, unreadable data): no half-made run
        // folder is left.
        let _ = std::fs::remove_dir_all(run.root());
    }
    trained.map(|_| ())
}
