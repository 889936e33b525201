//! A family's own commands (`generate`, `recommend`, ...), applied to one of its runs.

use anyhow::{Result, bail};
use clap::ArgMatches;
use vitrine_core::family::UseContext;

use super::{inference_device_for, open_run, print};
use crate::cli::RunArgs;
use crate::registry::FAMILIES;
use crate::terminal::Terminal;

pub fn run(name: &str, args: &RunArgs, matches: &ArgMatches) -> Result<()> {
    let owner = FAMILIES.iter().find(|f| f.commands().iter().any(|c| c.get_name() == name));
    let Some(owner) = owner else { bail!("unknown command `{name}`: see `vitrine --help`") };
    let (trained, family) = open_run(&args.run)?;
    if family.task() != owner.task() {
        bail!("`vitrine {name}` is for {} runs; {} is a {} run", owner.task(), args.run.display(), family.task());
    }
    let compute = inference_device_for(args.backend.backend, trained.run_section())?;
    let reporter = Terminal::new(args.json);
    let class_map = args.class_map()?;
    let ctx = UseContext { compute: &compute, reporter: &reporter, strict: args.strict, class_map: &class_map };
    print(&trained.command(name, matches, &ctx)?, args.json)
}
