//! Reading data, in one place: images (IDX files and class folders, decoded once into memory,
//! and the batches built from them) and tables (CSV, TSV, RecBole atomic files and JSON Lines,
//! read row by row with bad rows named by file and line) for the families that read records.

mod batches;
mod classes;
mod folder;
mod idx;
mod images;
mod table;

pub use batches::{BatchSource, ImageBatch, ImageBatches, PixelRange, epoch_rng, in_background};
pub use classes::{ClassMap, ClassMatcher};
pub use folder::{has_image_extension, load_folder};
pub use idx::{load_idx, write_idx_images, write_idx_labels};
pub use images::{ImageSet, LoadReport, to_shape};
pub use table::{SkippedRow, TABLE_EXTENSIONS, Table, TableRow, numbered_lines};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::config::{DataSource, ImageDataSection, ImageShape, SourceLayout};
use crate::reporter::Reporter;

/// Loads one configured source. `classes` are the known classes in label order: required to
/// match an image folder against a trained model, and used to name IDX labels. With `stream`, a
/// folder's images stay on disk (IDX files are always read whole).
pub fn load_source(
    source: &DataSource,
    shape: ImageShape,
    classes: Option<&ClassMatcher>,
    strict: bool,
    stream: bool,
    reporter: &dyn Reporter,
) -> Result<(ImageSet, LoadReport)> {
    match source.layout()? {
        SourceLayout::Idx { images, labels } => {
            let set = load_idx(&images, &labels, shape, classes.map(ClassMatcher::classes))?;
            Ok((set, LoadReport::default()))
        }
        SourceLayout::Folder(folder) => {
            load_folder(&folder, shape, classes, strict, stream, reporter).with_context(|| format!("loading image folder {}", folder.display()))
        }
    }
}

/// The image data of a run, decoded once.
pub struct ImageSplits {
    pub train: Arc<ImageSet>,
    pub valid: Arc<ImageSet>,
    pub test: Option<Arc<ImageSet>>,
    /// What the loaders skipped, one line per source.
    pub skipped: Vec<String>,
}

impl ImageSplits {
    /// E.g. `54000 train / 6000 valid / 10000 test images, 10 classes, 1x28x28`.
    pub fn describe(&self) -> String {
        let shape = self.train.shape;
        format!(
            "{} train / {} valid{} images, {} classes, {}x{}x{}",
            self.train.len(),
            self.valid.len(),
            self.test.as_ref().map(|t| format!(" / {} test", t.len())).unwrap_or_default(),
            self.train.classes.len(),
            shape.channels,
            shape.height,
            shape.width
        )
    }
}

/// Loads train / valid / test as configured; validation is split off `train` (with `seed`)
/// when not given, and `limit` applies to `train`.
pub fn load_image_splits(d: &ImageDataSection, seed: u64, strict: bool, reporter: &dyn Reporter) -> Result<ImageSplits> {
    let mut skipped = Vec::new();
    let mut note = |name: &str, report: &LoadReport| {
        if let Some(line) = report.summary() {
            reporter.info(&format!("data.{name}: {line}"));
            skipped.push(format!("data.{name}: {line}"));
        }
    };
    let map = ClassMap::from_setting(d.class_map.as_ref())?;
    let named = d.classes.as_deref().map(|classes| ClassMatcher::new(classes, &map)).transpose().context("data.classes")?;
    let (mut train, report) = load_source(&d.train, d.image, named.as_ref(), strict, d.stream, reporter).context("data.train")?;
    note("train", &report);
    if let Some(limit) = d.limit {
        train = train.truncate(limit);
    }
    let classes = ClassMatcher::new(&train.classes, &map)?;
    // A given valid/test source, its classes matched to train's.
    let mut held_out = |name: &str, source: &DataSource| -> Result<ImageSet> {
        let (set, report) = load_source(source, d.image, Some(&classes), strict, d.stream, reporter).with_context(|| format!("data.{name}"))?;
        note(name, &report);
        Ok(set)
    };
    let (train, valid) = match &d.valid {
        Some(source) => (train, held_out("valid", source)?),
        None => train.split(d.valid_fraction, seed),
    };
    let test = d.test.as_ref().map(|source| held_out("test", source).map(Arc::new)).transpose()?;
    if train.is_empty() || valid.is_empty() {
        bail!("too little data: {} training and {} validation images", train.len(), valid.len());
    }
    Ok(ImageSplits { train: Arc::new(train), valid: Arc::new(valid), test, skipped })
}

/// Decodes image files (folders are searched recursively, hidden files and non-images left
/// out) into one set shaped as `shape`, labelled 0. An unreadable file is a warning and skipped,
/// or an error when `strict`. Returns the set and the files it holds, in order.
pub fn read_images(inputs: &[PathBuf], shape: ImageShape, strict: bool, reporter: &dyn Reporter) -> Result<(ImageSet, Vec<PathBuf>)> {
    let mut files = Vec::new();
    for input in inputs {
        collect_images(input, &mut files)?;
    }
    if files.is_empty() {
        bail!("no image files found in {inputs:?}");
    }
    let mut kept = Vec::new();
    let mut pixels = Vec::new();
    for file in files {
        match decode_file(&file, shape) {
            Ok(bytes) => {
                pixels.extend(bytes);
                kept.push(file);
            }
            Err(e) if strict => return Err(e),
            Err(e) => reporter.warn(&format!("skipping {e:#}")),
        }
    }
    if kept.is_empty() {
        bail!("none of the inputs could be read as images");
    }
    let set = ImageSet::in_memory(shape, pixels, vec![0; kept.len()], vec!["?".into()]);
    Ok((set, kept))
}

fn decode_file(path: &Path, shape: ImageShape) -> Result<Vec<u8>> {
    let image = images::decode(path).map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
    Ok(to_shape(image, shape))
}

fn collect_images(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_file() {
        out.push(path.to_path_buf());
    } else if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading folder {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        entries.sort();
        for entry in entries {
            if entry.is_dir() || has_image_extension(&entry) {
                collect_images(&entry, out)?;
            }
        }
    } else {
        bail!("{} does not exist", path.display());
    }
    Ok(())
}
