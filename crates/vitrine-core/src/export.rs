//! Exporting and loading weights: burnpack (Burn's own) and safetensors with PyTorch names.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};

/// A weights file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    Burnpack,
    Safetensors,
}

impl std::str::FromStr for WeightsFormat {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "burnpack" | "bpk" => Ok(Self::Burnpack),
            "safetensors" => Ok(Self::Safetensors),
            _ => bail!("unknown weights format `{s}`: expected burnpack or safetensors"),
        }
    }
}

/// Writes `model`'s weights to `path`. Safetensors files follow PyTorch's `state_dict`
/// conventions (linear weights `[out, in]`, batch-norm `weight`/`bias`, no enum variant names)
/// and carry `metadata`.
pub fn export_weights<M: Module + ModuleSnapshot>(model: &M, format: WeightsFormat, path: &Path, metadata: &[(&str, String)]) -> Result<()> {
    export_weights_renamed(model, format, path, metadata, &[])
}

/// [`export_weights`], with safetensors names rewritten by `renames` (a regex and its
/// replacement, applied in turn): for a model whose PyTorch original names its parts otherwise.
pub fn export_weights_renamed<M: Module + ModuleSnapshot>(
    model: &M,
    format: WeightsFormat,
    path: &Path,
    metadata: &[(&str, String)],
    renames: &[(String, String)],
) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    crate::run_dir::save_atomic(path, |tmp| match format {
        WeightsFormat::Burnpack => model.clone().save_file(tmp).context("writing burnpack"),
        WeightsFormat::Safetensors => {
            let mut store = SafetensorsStore::from_file(tmp).with_to_adapter(BurnToPyTorchAdapter).skip_enum_variants(true);
            for (from, to) in renames {
                store = store.with_key_remapping(from, to);
            }
            for (key, value) in metadata {
                store = store.metadata(*key, value.clone());
            }
            model.save_into(&mut store).map_err(|e| anyhow::anyhow!("writing safetensors: {e}"))
        }
    })
    .with_context(|| format!("exporting weights to {}", path.display()))
}

/// Loads burnpack weights into `model`, with a clear error when they do not fit its architecture.
pub fn load_weights<M: Module>(model: M, path: &Path, architecture: &str) -> Result<M> {
    if !path.is_file() {
        bail!("weights file {} does not exist", path.display());
    }
    model.try_load_file(path).map_err(|e| anyhow::anyhow!("weights file {} does not match the {architecture} architecture: {e}", path.display()))
}
