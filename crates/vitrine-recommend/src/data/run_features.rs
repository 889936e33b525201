//! Item or customer vectors read by other Vitrine runs: a text run's pooled vectors of a
//! description column, an image run's penultimate-layer vectors of a photo column. They join the
//! feature file's numbers, so a two-tower item tower sees what the product looks like or says.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::*;
use vitrine_core::data::{BatchSource, ImageBatches, PixelRange, read_images};
use vitrine_core::reporter::Silent;

/// The vectors a text run gives each entity's text.
pub fn texts(run: &Path, values: &[(u32, String)]) -> Result<Vec<(u32, Vec<f32>)>> {
    let trained = vitrine_text::inference::TextRun::open(run).with_context(|| format!("text_run {}", run.display()))?;
    let texts: Vec<String> = values.iter().map(|(_, t)| t.clone()).collect();
    let vectors = vitrine_text::inference::text_features(&trained, &texts, &Device::flex())?;
    Ok(values.iter().map(|(i, _)| *i).zip(vectors).collect())
}

/// The vectors an image run gives each entity's photo; paths are relative to `base` (the
/// feature file's folder) unless they exist as given. Photos that do not decode are left out.
pub fn images(run: &Path, values: &[(u32, String)], base: &Path) -> Result<Vec<(u32, Vec<f32>)>> {
    let trained = vitrine_image::inference::ImageRun::open(run).with_context(|| format!("image_run {}", run.display()))?;
    let device = Device::flex();
    let classifier = trained.classifier(&device)?;
    let resolve = |p: &str| -> PathBuf {
        let given = PathBuf::from(p);
        if given.exists() { given } else { base.join(p) }
    };
    let paths: Vec<PathBuf> = values.iter().map(|(_, p)| resolve(p)).collect();
    let (set, kept) = read_images(&paths, trained.config.data.image, false, &Silent)?;
    let owner: HashMap<&PathBuf, u32> = paths.iter().zip(values).map(|(p, (i, _))| (p, *i)).collect();
    let batches = ImageBatches::ordered(std::sync::Arc::new(set), 256, PixelRange::Unit, device);
    let mut out = Vec::with_capacity(kept.len());
    let mut files = kept.iter();
    for batch in batches.batches(0) {
        let features = classifier.features(batch.images);
        let [n, d] = features.dims();
        let flat = features.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 data");
        for row in 0..n {
            let file = files.next().expect("one file per image");
            out.push((owner[file], flat[row * d..(row + 1) * d].to_vec()));
        }
    }
    Ok(out)
}
