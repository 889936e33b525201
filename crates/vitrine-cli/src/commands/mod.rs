//! One module per verb; each finds its family through the registry and prints what it returns.

mod bench;
mod devices;
mod eval;
mod export;
mod own;
mod predict;
mod train;

use std::path::Path;

use anyhow::{Result, bail};
use clap::{ArgMatches, FromArgMatches};
use vitrine_core::backend::{BackendChoice, ComputeDevice, select_device, select_devices};
use vitrine_core::config::{ConfigFile, RunSection};
use vitrine_core::family::{Family, Output, TrainedRun, family_of_task};
use vitrine_core::run_dir::{CONFIG_FILE, RunDir};

use crate::registry::FAMILIES;

/// Runs the subcommand of `matches`.
pub fn run(matches: &ArgMatches) -> Result<()> {
    let Some((name, sub)) = matches.subcommand() else { bail!("no command given: see `vitrine --help`") };
    match name {
        "train" => train::train(&parse(sub)?),
        "config" => train::show(&parse(sub.subcommand_matches("show").expect("clap requires `show`"))?),
        "eval" => eval::eval(&parse(sub)?, sub),
        "predict" => predict::predict(&parse(sub)?, sub),
        "export" => export::export(&parse(sub)?),
        "bench" => bench::bench(&parse(sub)?, sub),
        "devices" => devices::devices(),
        _ => own::run(name, &parse(sub)?, sub),
    }
}

fn parse<T: FromArgMatches>(matches: &ArgMatches) -> Result<T> {
    Ok(T::from_arg_matches(matches)?)
}

/// The family whose configs name the task of `file`.
fn family_of(file: &ConfigFile) -> Result<&'static dyn Family> {
    family_of_task(FAMILIES, file.task(), &file.path)
}

/// A finished run, opened by its family, and that family.
fn open_run(path: &Path) -> Result<(Box<dyn TrainedRun>, &'static dyn Family)> {
    let run = RunDir::open(path)?;
    let config = ConfigFile::read(&run.file(CONFIG_FILE))?;
    let family = family_of(&config)?;
    Ok((family.open(run, &config)?, family))
}

/// The device for `--backend`, else the run's configured devices or backend.
fn device_for(flag: Option<BackendChoice>, run: &RunSection) -> Result<ComputeDevice> {
    device_among(flag, &run.devices, run.backend)
}

/// Where `eval`, `predict` and a family's own commands compute: as [`device_for`], but of the
/// run's `run.devices` only the first (its main device). They run on one device, so the other
/// devices of a data-parallel run are neither probed nor needed.
fn inference_device_for(flag: Option<BackendChoice>, run: &RunSection) -> Result<ComputeDevice> {
    device_among(flag, &run.devices[..run.devices.len().min(1)], run.backend)
}

fn device_among(flag: Option<BackendChoice>, devices: &[String], backend: BackendChoice) -> Result<ComputeDevice> {
    match flag {
        None if !devices.is_empty() => select_devices(devices),
        _ => select_device(flag.unwrap_or(backend)),
    }
}

/// Prints a command's answer as text, or as JSON with `--json`.
fn print(output: &Output, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&output.json)?);
    } else {
        print!("{}", output.text);
    }
    Ok(())
}

/// A flag another family declared for this verb, given for a run of `family`, is an error rather
/// than silently ignored.
fn refuse_foreign_flags(matches: &ArgMatches, family: &dyn Family, declared: impl Fn(&dyn Family) -> Vec<clap::Arg>) -> Result<()> {
    let own: Vec<clap::Id> = declared(family).iter().map(|a| a.get_id().clone()).collect();
    for other in FAMILIES.iter().filter(|f| f.task() != family.task()) {
        for arg in declared(*other) {
            let given = matches.value_source(arg.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine);
            if given && !own.contains(arg.get_id()) {
                let name = arg.get_long().map_or_else(|| arg.get_id().to_string(), |l| format!("--{l}"));
                bail!("{name} applies to {} runs only; this is a {} run", other.task(), family.task());
            }
        }
    }
    Ok(())
}
