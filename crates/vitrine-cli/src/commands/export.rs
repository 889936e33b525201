//! `vitrine export`: a run's weights as burnpack or safetensors.

use anyhow::Result;

use super::open_run;
use crate::cli::ExportArgs;

pub fn export(args: &ExportArgs) -> Result<()> {
    let (trained, _) = open_run(&args.run)?;
    trained.export(args.format, &args.out, &burn::tensor::Device::flex())?;
    println!("wrote {}", args.out.display());
    Ok(())
}
