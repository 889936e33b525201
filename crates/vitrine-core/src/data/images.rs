use std::path::PathBuf;

use image::{DynamicImage, imageops::FilterType};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

use crate::config::ImageShape;

/// Labelled images decoded once, kept as bytes in one buffer (`len × C×H×W`).
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub shape: ImageShape,
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub classes: Vec<String>,
}

/// What a loader skipped, so a run can say so.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub hidden: usize,
    pub not_images: usize,
    /// Files with an image extension that did not decode, with the reason.
    pub corrupt: Vec<(PathBuf, String)>,
}

impl LoadReport {
    /// One line for the log, or `None` when nothing was skipped.
    pub fn summary(&self) -> Option<String> {
        if self.hidden == 0 && self.not_images == 0 && self.corrupt.is_empty() {
            return None;
        }
        Some(format!(
            "skipped {} hidden file(s), {} non-image file(s), {} unreadable image(s)",
            self.hidden,
            self.not_images,
            self.corrupt.len()
        ))
    }
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The bytes of image `i`, channel-major.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.pixels();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.shape.pixels());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            shape: self.shape,
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
        }
    }

    /// The first `n` examples.
    pub fn truncate(mut self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.pixels.truncate(n * self.shape.pixels());
        self
    }

    /// Holds out `fraction` of the examples (shuffled with `seed`) as a validation set.
    pub fn split(&self, fraction: f64, seed: u64) -> (ImageSet, ImageSet) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        let n_valid = ((self.len() as f64 * fraction).round() as usize).clamp(1, self.len().saturating_sub(1).max(1));
        let (valid, train) = order.split_at(n_valid);
        (self.subset(train), self.subset(valid))
    }

    /// How many examples each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// Converts any decoded image to the model's input shape: grey or RGB, resized exactly.
pub fn to_shape(image: DynamicImage, shape: ImageShape) -> Vec<u8> {
    let (w, h) = (shape.width as u32, shape.height as u32);
    let image = if image.width() == w && image.height() == h {
        image
    } else {
        image.resize_exact(w, h, FilterType::Triangle)
    };
    if shape.channels == 1 {
        image.into_luma8().into_raw()
    } else {
        // Interleaved RGB to channel-major.
        let rgb = image.into_rgb8().into_raw();
        let n = shape.height * shape.width;
        let mut out = vec![0u8; 3 * n];
        for (p, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * n + p] = px[c];
            }
        }
        out
    }
}
