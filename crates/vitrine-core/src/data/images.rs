use std::borrow::Cow;
use std::path::{Path, PathBuf};

use image::{DynamicImage, imageops::FilterType};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

use crate::config::ImageShape;

/// Labelled images: decoded once into one buffer (`len × C×H×W` bytes), or streamed, each
/// decoded from its file whenever a batch needs it (memory that does not grow with the data).
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub shape: ImageShape,
    pixels: Pixels,
    pub labels: Vec<u32>,
    pub classes: Vec<String>,
}

#[derive(Debug, Clone)]
enum Pixels {
    InMemory(Vec<u8>),
    OnDisk(Vec<PathBuf>),
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
        Some(format!("skipped {} hidden file(s), {} non-image file(s), {} unreadable image(s)", self.hidden, self.not_images, self.corrupt.len()))
    }
}

impl ImageSet {
    /// Images decoded into `pixels`, `shape.pixels()` bytes each, channel-major.
    pub fn in_memory(shape: ImageShape, pixels: Vec<u8>, labels: Vec<u32>, classes: Vec<String>) -> Self {
        assert_eq!(pixels.len(), labels.len() * shape.pixels(), "one image of {shape:?} per label");
        Self { shape, pixels: Pixels::InMemory(pixels), labels, classes }
    }

    /// Images left in their files, decoded when used.
    pub fn on_disk(shape: ImageShape, files: Vec<PathBuf>, labels: Vec<u32>, classes: Vec<String>) -> Self {
        assert_eq!(files.len(), labels.len(), "one file per label");
        Self { shape, pixels: Pixels::OnDisk(files), labels, classes }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Whether images are decoded from their files when used.
    pub fn is_streamed(&self) -> bool {
        matches!(self.pixels, Pixels::OnDisk(_))
    }

    /// Bytes of decoded pixels held in memory (none when streamed).
    pub fn memory_bytes(&self) -> usize {
        match &self.pixels {
            Pixels::InMemory(p) => p.len(),
            Pixels::OnDisk(_) => 0,
        }
    }

    /// The bytes of image `i` at the set's shape, channel-major: borrowed when in memory,
    /// decoded now when streamed.
    pub fn image(&self, i: usize) -> Cow<'_, [u8]> {
        match &self.pixels {
            Pixels::InMemory(pixels) => {
                let n = self.shape.pixels();
                Cow::Borrowed(&pixels[i * n..(i + 1) * n])
            }
            Pixels::OnDisk(files) => Cow::Owned(to_shape(self.decode_file(&files[i]), self.shape)),
        }
    }

    /// Image `i` cut to `crop` (fractions of its width and height: left, top, width, height) and
    /// resized to the set's shape: random-resized-crop augmentation, on the full-size photo when
    /// streamed.
    pub fn image_cropped(&self, i: usize, crop: [f64; 4]) -> Vec<u8> {
        let full = match &self.pixels {
            Pixels::OnDisk(files) => self.decode_file(&files[i]),
            Pixels::InMemory(_) => to_dynamic(&self.image(i), self.shape),
        };
        let (w, h) = (full.width() as f64, full.height() as f64);
        let [left, top, cw, ch] = crop;
        let (x, y) = ((left * w) as u32, (top * h) as u32);
        let (cw, ch) = (((cw * w).round() as u32).clamp(1, full.width() - x), ((ch * h).round() as u32).clamp(1, full.height() - y));
        to_shape(full.crop_imm(x, y, cw, ch), self.shape)
    }

    /// A streamed file, decoded. The loader checked its header, so failing now means the file
    /// changed or is truncated: a black image stands in, with a warning, rather than ending the run.
    fn decode_file(&self, path: &Path) -> DynamicImage {
        decode(path).unwrap_or_else(|e| {
            eprintln!("warning: {}: {e}; a black image stands in for it", path.display());
            DynamicImage::new_luma8(self.shape.width as u32, self.shape.height as u32)
        })
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let pixels = match &self.pixels {
            Pixels::InMemory(_) => {
                let mut pixels = Vec::with_capacity(indices.len() * self.shape.pixels());
                for &i in indices {
                    pixels.extend_from_slice(&self.image(i));
                }
                Pixels::InMemory(pixels)
            }
            Pixels::OnDisk(files) => Pixels::OnDisk(indices.iter().map(|&i| files[i].clone()).collect()),
        };
        ImageSet { shape: self.shape, pixels, labels: indices.iter().map(|&i| self.labels[i]).collect(), classes: self.classes.clone() }
    }

    /// The first `n` examples.
    pub fn truncate(mut self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        self.labels.truncate(n);
        match &mut self.pixels {
            Pixels::InMemory(pixels) => pixels.truncate(n * self.shape.pixels()),
            Pixels::OnDisk(files) => files.truncate(n),
        }
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

/// A reader of `path` that knows its format (from its first bytes, whatever the extension).
fn reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>, String> {
    image::ImageReader::open(path).map_err(|e| e.to_string())?.with_guessed_format().map_err(|e| e.to_string())
}

/// Reads a file's format and size only, as a cheap check that a streamed image will decode.
pub(super) fn check_header(path: &Path) -> Result<(u32, u32), String> {
    reader(path)?.into_dimensions().map_err(|e| format!("not a readable image: {e}"))
}

/// Decodes an image file of any format the `image` crate reads.
pub(super) fn decode(path: &Path) -> Result<DynamicImage, String> {
    reader(path)?.decode().map_err(|e| format!("not a readable image: {e}"))
}

/// Channel-major bytes of `shape` back into an image.
fn to_dynamic(bytes: &[u8], shape: ImageShape) -> DynamicImage {
    let (w, h) = (shape.width as u32, shape.height as u32);
    if shape.channels == 1 {
        return DynamicImage::ImageLuma8(image::GrayImage::from_raw(w, h, bytes.to_vec()).expect("one plane"));
    }
    let n = shape.height * shape.width;
    let interleaved: Vec<u8> = (0..n).flat_map(|p| [bytes[p], bytes[n + p], bytes[2 * n + p]]).collect();
    DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, interleaved).expect("three planes"))
}

/// Converts any decoded image to the model's input shape: grey or RGB, resized exactly.
pub fn to_shape(image: DynamicImage, shape: ImageShape) -> Vec<u8> {
    let (w, h) = (shape.width as u32, shape.height as u32);
    let image = if image.width() == w && image.height() == h { image } else { image.resize_exact(w, h, FilterType::Triangle) };
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
