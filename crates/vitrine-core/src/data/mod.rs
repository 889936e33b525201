//! Data sources (images and labelled text), decoded once into memory, and the batches built
//! from them.

mod batches;
mod folder;
mod idx;
mod images;
mod text;
mod tokens;

pub use batches::{BatchSource, ImageBatch, ImageBatches, PixelRange};
pub use folder::{has_image_extension, load_folder};
pub use idx::{load_idx, write_idx_images, write_idx_labels};
pub use images::{ImageSet, LoadReport, to_shape};
pub use text::{DedupReport, SkippedRow, TextExample, TextSet, TextSource, load_text};
pub use tokens::{TokenBatch, TokenBatches, TokenInput, TokenizedSet};

use anyhow::{Context, Result};

use crate::config::{DataSource, ImageShape, SourceLayout};

/// Loads one configured source. `classes` are the known class names in label order: required
/// to match an image folder against a trained model, and used to name IDX labels.
pub fn load_source(
    source: &DataSource,
    shape: ImageShape,
    classes: Option<&[String]>,
    strict: bool,
) -> Result<(ImageSet, LoadReport)> {
    match source.layout()? {
        SourceLayout::Idx { images, labels } => {
            let set = load_idx(&images, &labels, shape, classes)?;
            Ok((set, LoadReport::default()))
        }
        SourceLayout::Folder(folder) => load_folder(&folder, shape, classes, strict)
            .with_context(|| format!("loading image folder {}", folder.display())),
    }
}
