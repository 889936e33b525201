//! `vitrine eval`: a run scored on held-out data by its family.

use anyhow::Result;
use clap::ArgMatches;
use vitrine_core::family::UseContext;

use super::{inference_device_for, open_run, print, refuse_foreign_flags};
use crate::cli::EvalArgs;
use crate::terminal::Terminal;

pub fn eval(args: &EvalArgs, matches: &ArgMatches) -> Result<()> {
    let (trained, family) = open_run(&args.on.run)?;
    refuse_foreign_flags(matches, family, |f| f.eval_args())?;
    let compute = inference_device_for(args.on.backend.backend, trained.run_section())?;
    let reporter = Terminal::new(args.on.json);
    let class_map = args.on.class_map()?;
    let ctx = UseContext { compute: &compute, reporter: &reporter, strict: args.on.strict, class_map: &class_map };
    print(&trained.evaluate(&args.data, matches, &ctx)?, args.on.json)
}
