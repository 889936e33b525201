//! The run directory: everything a run writes, each file replaced atomically.
//!
//! ```text
//! runs/NAME/
//!   config.toml        resolved config          classes.json   class names in label order
//!   metrics.csv        one row per epoch        model.bpk      final weights
//!   loss.png accuracy.png                       report.md report.json
//!   checkpoints/epoch-N/ {model.bpk, optimizer.bpk, state.json}   checkpoints/latest
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A run's folder on disk.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

pub const CONFIG_FILE: &str = "config.toml";
pub const CLASSES_FILE: &str = "classes.json";
pub const WEIGHTS_FILE: &str = "model.bpk";

impl RunDir {
    /// Creates a fresh run folder; an existing non-empty folder is refused so no run is overwritten.
    pub fn create(root: &Path) -> Result<Self> {
        if root.exists() && std::fs::read_dir(root)?.next().is_some() {
            bail!("{} already exists and is not empty: pick another --out, or continue it with --resume {0}", root.display());
        }
        std::fs::create_dir_all(root.join("checkpoints")).with_context(|| format!("creating run folder {}", root.display()))?;
        Ok(Self { root: root.to_path_buf() })
    }

    /// Opens an existing run folder.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.join(CONFIG_FILE).is_file() {
            bail!("{} is not a Vitrine run folder (no {CONFIG_FILE} inside)", root.display());
        }
        Ok(Self { root: root.to_path_buf() })
    }

    /// The class names of a finished run, with a clear error when training has not written the
    /// final weights yet.
    pub fn trained_classes(&self) -> Result<Vec<String>> {
        let classes = self.classes()?;
        if !self.file(WEIGHTS_FILE).is_file() {
            bail!("{} has no {WEIGHTS_FILE} yet (training did not finish); continue it with `vitrine train --resume {0}`", self.root.display());
        }
        Ok(classes)
    }

    /// `runs_dir/name`, or `name-2`, `name-3`, ... when taken.
    pub fn unique_path(runs_dir: &Path, name: &str) -> PathBuf {
        let first = runs_dir.join(name);
        if !first.exists() {
            return first;
        }
        (2..).map(|i| runs_dir.join(format!("{name}-{i}"))).find(|p| !p.exists()).expect("unbounded")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Writes `name` inside the run atomically.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> Result<()> {
        write_atomic(&self.file(name), bytes.as_ref())
    }

    pub fn read_to_string(&self, name: &str) -> Result<String> {
        let path = self.file(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Class names in label order.
    pub fn classes(&self) -> Result<Vec<String>> {
        let text = self.read_to_string(CLASSES_FILE)?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", self.file(CLASSES_FILE).display()))
    }

    /// Writes a new run's resolved config and class names; for a resumed run, checks instead
    /// that the data still has the classes the run was trained with.
    pub fn record_start(&self, config_toml: &str, classes: &[String], resuming: bool) -> Result<()> {
        if resuming {
            let saved = self.classes()?;
            if saved != classes {
                bail!("the data's classes {classes:?} differ from the run's {saved:?}");
            }
            return Ok(());
        }
        self.write(CONFIG_FILE, config_toml)?;
        self.write(CLASSES_FILE, serde_json::to_string_pretty(classes)?)
    }

    fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// A clean folder to write the checkpoint of `epoch` into; see [`RunDir::commit_checkpoint`].
    pub fn begin_checkpoint(&self, epoch: usize) -> Result<PathBuf> {
        let dir = self.checkpoints().join(format!(".partial-epoch-{epoch}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Publishes a finished checkpoint: rename the folder, then point `latest` at it, so a kill
    /// at any moment leaves `latest` naming a complete checkpoint. Keeps the newest `keep`.
    pub fn commit_checkpoint(&self, epoch: usize, keep: usize) -> Result<PathBuf> {
        let partial = self.checkpoints().join(format!(".partial-epoch-{epoch}"));
        let done = self.checkpoints().join(format!("epoch-{epoch}"));
        if done.exists() {
            std::fs::remove_dir_all(&done)?;
        }
        std::fs::rename(&partial, &done).with_context(|| format!("publishing {}", done.display()))?;
        sync_dir(&self.checkpoints());
        write_atomic(&self.checkpoints().join("latest"), format!("epoch-{epoch}\n").as_bytes())?;
        for old in self.checkpoint_epochs()?.into_iter().rev().skip(keep.max(1)) {
            let _ = std::fs::remove_dir_all(self.checkpoints().join(format!("epoch-{old}")));
        }
        Ok(done)
    }

    /// The newest complete checkpoint, as named by `latest`.
    pub fn latest_checkpoint(&self) -> Result<Option<PathBuf>> {
        let pointer = self.checkpoints().join("latest");
        if !pointer.exists() {
            return Ok(None);
        }
        let name = std::fs::read_to_string(&pointer)?.trim().to_string();
        let dir = self.checkpoints().join(&name);
        if !dir.is_dir() {
            bail!("{} names {name}, which is missing", pointer.display());
        }
        Ok(Some(dir))
    }

    fn checkpoint_epochs(&self) -> Result<Vec<usize>> {
        let mut epochs: Vec<usize> = std::fs::read_dir(self.checkpoints())?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("epoch-")?.parse().ok())
            .collect();
        epochs.sort();
        Ok(epochs)
    }
}

/// Writes a file so that readers see the old content or the new, never a mix:
/// a temporary file beside it, flushed to disk, then renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_beside(path);
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Runs `save` against a temporary path beside `path`, then renames it into place. For
/// libraries that write files themselves (weights, images).
pub fn save_atomic(path: &Path, save: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_beside(path);
    save(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The extension is kept: some writers pick the format from it.
    path.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_publish_atomically_and_prune() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(&tmp.path().join("r")).unwrap();
        assert!(run.latest_checkpoint().unwrap().is_none());
        for epoch in 1..=3 {
            let dir = run.begin_checkpoint(epoch).unwrap();
            std::fs::write(dir.join("state.json"), epoch.to_string()).unwrap();
            run.commit_checkpoint(epoch, 2).unwrap();
        }
        // A checkpoint interrupted half-way is never the latest.
        let partial = run.begin_checkpoint(4).unwrap();
        std::fs::write(partial.join("state.json"), "half").unwrap();
        let latest = run.latest_checkpoint().unwrap().unwrap();
        assert!(latest.ends_with("epoch-3"));
        assert_eq!(run.checkpoint_epochs().unwrap(), [2, 3]);
        // An existing run is never overwritten by a new one.
        std::fs::write(run.file(CONFIG_FILE), "x").unwrap();
        assert!(RunDir::create(run.root()).is_err());
        assert_eq!(RunDir::unique_path(tmp.path(), "r"), tmp.path().join("r-2"));
    }
}
