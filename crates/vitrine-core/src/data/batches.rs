//! Batches as device tensors, built on a background thread so loading never stalls compute.

use std::borrow::Cow;
use std::sync::{Arc, mpsc};

use burn::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use rayon::prelude::*;

use super::images::ImageSet;
use crate::config::Augment;

/// How many ready batches the loader keeps ahead of the model.
const PREFETCH: usize = 3;

/// Runs `batches` on a background thread, a few batches ahead of the consumer, so building
/// batches never stalls compute. The thread stops when the consumer drops the iterator.
pub fn in_background<B, I>(batches: impl FnOnce() -> I + Send + 'static) -> Box<dyn Iterator<Item = B>>
where
    B: Send + 'static,
    I: Iterator<Item = B>,
{
    let (sender, receiver) = mpsc::sync_channel(PREFETCH);
    std::thread::spawn(move || {
        for batch in batches() {
            if sender.send(batch).is_err() {
                return; // The consumer stopped early.
            }
        }
    });
    Box::new(receiver.into_iter())
}

/// A source of batches, one pass per epoch.
pub trait BatchSource: Send + Sync {
    type Batch: Send + 'static;
    /// Number of examples in one pass.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn num_batches(&self) -> usize;
    /// The batches of one epoch; shuffling and augmentation depend only on the seed and `epoch`,
    /// so a resumed run sees the same data order as an uninterrupted one.
    fn batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Self::Batch> + '_>;
}

/// The random stream of one epoch: a function of the seed and the epoch only, so a resumed run
/// sees the same data order as an uninterrupted one.
pub fn epoch_rng(seed: u64, epoch: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Pixel scaling of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelRange {
    /// [0, 1]: classifiers and autoencoders.
    Unit,
    /// [-1, 1]: GANs (tanh output).
    Symmetric,
}

impl PixelRange {
    fn scale(self, v: u8) -> f32 {
        match self {
            Self::Unit => v as f32 / 255.0,
            Self::Symmetric => v as f32 / 127.5 - 1.0,
        }
    }
}

/// Images `[batch, C, H, W]` and their labels `[batch]`.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    pub images: Tensor<4>,
    pub targets: Tensor<1, Int>,
}

/// Batches of an [`ImageSet`]: shuffled and augmented for training, in order for evaluation.
#[derive(Clone)]
pub struct ImageBatches {
    set: Arc<ImageSet>,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    augment: Augment,
    range: PixelRange,
    device: Device,
}

impl ImageBatches {
    /// In-order batches without augmentation (validation, test, prediction).
    pub fn ordered(set: Arc<ImageSet>, batch_size: usize, range: PixelRange, device: Device) -> Self {
        Self { set, batch_size, shuffle_seed: None, augment: Augment::default(), range, device }
    }

    /// Where the batches are put.
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Shuffled batches, augmented as configured (training).
    pub fn shuffled(set: Arc<ImageSet>, batch_size: usize, seed: u64, augment: Augment, range: PixelRange, device: Device) -> Self {
        Self { set, batch_size, shuffle_seed: Some(seed), augment, range, device }
    }
}

impl BatchSource for ImageBatches {
    type Batch = ImageBatch;

    fn len(&self) -> usize {
        self.set.len()
    }

    fn num_batches(&self) -> usize {
        self.set.len().div_ceil(self.batch_size)
    }

    fn batches(&self, epoch: usize) -> Box<dyn Iterator<Item = ImageBatch> + '_> {
        let this = self.clone();
        in_background(move || {
            let mut order: Vec<usize> = (0..this.set.len()).collect();
            let mut rng = epoch_rng(this.shuffle_seed.unwrap_or(0), epoch);
            if this.shuffle_seed.is_some() {
                order.shuffle(&mut rng);
            }
            let chunks: Vec<Vec<usize>> = order.chunks(this.batch_size).map(<[usize]>::to_vec).collect();
            chunks.into_iter().map(move |chunk| this.build(&chunk, &mut rng))
        })
    }
}

impl ImageBatches {
    fn build(&self, indices: &[usize], rng: &mut StdRng) -> ImageBatch {
        let shape = self.set.shape;
        let (c, h, w) = (shape.channels, shape.height, shape.width);
        let mut pixels = Vec::with_capacity(indices.len() * shape.pixels());
        for image in self.sources(indices, rng) {
            let start = pixels.len();
            let flip = self.augment.flip && rng.random_bool(0.5);
            let s = self.augment.shift as i32;
            let (dy, dx) = if s > 0 { (rng.random_range(-s..=s) as isize, rng.random_range(-s..=s) as isize) } else { (0, 0) };
            for ch in 0..c {
                let plane = &image[ch * h * w..(ch + 1) * h * w];
                for y in 0..h as isize {
                    for x in 0..w as isize {
                        // Output (y, x) reads input (y - dy, x - dx), mirrored when flipping.
                        let sy = y - dy;
                        let sx = if flip { w as isize - 1 - (x - dx) } else { x - dx };
                        let v = if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) { plane[sy as usize * w + sx as usize] } else { 0 };
                        pixels.push(self.range.scale(v));
                    }
                }
            }
            // Drawn only when erasing is on, so runs without it keep their random stream.
            if self.augment.erase > 0.0
                && rng.random_bool(self.augment.erase)
                && let Some((top, left, eh, ew)) = erase_box(h, w, rng)
            {
                for ch in 0..c {
                    for y in top..top + eh {
                        let row = start + ch * h * w + y * w;
                        for p in &mut pixels[row + left..row + left + ew] {
                            *p = self.range.scale(rng.random());
                        }
                    }
                }
            }
        }
        let targets: Vec<i64> = indices.iter().map(|&i| self.set.labels[i] as i64).collect();
        let n = indices.len();
        ImageBatch {
            images: Tensor::from_data(TensorData::new(pixels, [n, c, h, w]), &self.device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), &self.device),
        }
    }
}

impl ImageBatches {
    /// The images at `indices` as bytes of the set's shape, cropped when configured: decoded in
    /// parallel when streamed or cropped, borrowed otherwise. Crop boxes are drawn first, in order,
    /// so the random stream does not depend on thread timing.
    fn sources(&self, indices: &[usize], rng: &mut StdRng) -> Vec<Cow<'_, [u8]>> {
        if self.augment.resized_crop {
            let crops: Vec<[f64; 4]> = indices.iter().map(|_| resized_crop_box(rng)).collect();
            return indices.par_iter().zip(crops).map(|(&i, crop)| Cow::Owned(self.set.image_cropped(i, crop))).collect();
        }
        match self.set.is_streamed() {
            true => indices.par_iter().map(|&i| self.set.image(i)).collect(),
            false => indices.iter().map(|&i| self.set.image(i)).collect(),
        }
    }
}

/// torchvision's `RandomResizedCrop` box as fractions (left, top, width, height): 8–100% of the
/// area, aspect ratio 3/4–4/3 (log-uniform), the whole image when ten draws do not fit.
fn resized_crop_box(rng: &mut StdRng) -> [f64; 4] {
    for _ in 0..10 {
        let area = rng.random_range(0.08..1.0);
        let aspect = rng.random_range((3.0f64 / 4.0).ln()..(4.0f64 / 3.0).ln()).exp();
        let (w, h) = ((area * aspect).sqrt(), (area / aspect).sqrt());
        if w <= 1.0 && h <= 1.0 {
            return [rng.random_range(0.0..=1.0 - w), rng.random_range(0.0..=1.0 - h), w, h];
        }
    }
    [0.0, 0.0, 1.0, 1.0]
}

/// Random erasing's rectangle (top, left, height, width): 2–40% of the image, aspect 0.3–3.3,
/// as in Zhong et al.; `None` when no draw in ten fits (tiny images).
fn erase_box(h: usize, w: usize, rng: &mut StdRng) -> Option<(usize, usize, usize, usize)> {
    for _ in 0..10 {
        let area = rng.random_range(0.02..0.4) * (h * w) as f64;
        let aspect = rng.random_range(0.3f64.ln()..(1.0f64 / 0.3).ln()).exp();
        let eh = (area * aspect).sqrt().round() as usize;
        let ew = (area / aspect).sqrt().round() as usize;
        if (1..h).contains(&eh) && (1..w).contains(&ew) {
            return Some((rng.random_range(0..=h - eh), rng.random_range(0..=w - ew), eh, ew));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ImageShape;

    fn tiny_set() -> Arc<ImageSet> {
        // Five 1×2×3 images whose pixels encode their index.
        let shape = ImageShape { channels: 1, height: 2, width: 3 };
        let pixels = (0..5u8).flat_map(|i| [i, 0, 0, 0, 0, 255]).collect();
        Arc::new(ImageSet::in_memory(shape, pixels, vec![0, 1, 2, 0, 1], vec!["a".into(), "b".into(), "c".into()]))
    }

    #[test]
    fn ordered_batches_cover_the_set_once() {
        let batches = ImageBatches::ordered(tiny_set(), 2, PixelRange::Unit, Device::flex());
        assert_eq!(batches.num_batches(), 3);
        let all: Vec<ImageBatch> = batches.batches(1).collect();
        let sizes: Vec<usize> = all.iter().map(|b| b.images.dims()[0]).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let targets: Vec<i64> = all.iter().flat_map(|b| b.targets.to_data().try_into_vec_as::<i64>().unwrap()).collect();
        assert_eq!(targets, [0, 1, 2, 0, 1]);
        let first = all[0].images.to_data().try_into_vec_as::<f32>().unwrap();
        assert_eq!(first[5], 1.0, "255 scales to 1");
    }

    #[test]
    fn shuffling_depends_on_seed_and_epoch_only() {
        let set = tiny_set();
        let order = |seed, epoch| -> Vec<i64> {
            let b = ImageBatches::shuffled(set.clone(), 5, seed, Augment::default(), PixelRange::Symmetric, Device::flex());
            let batch = b.batches(epoch).next().unwrap();
            // First pixel of each image is its index scaled to [-1, 1].
            let px = batch.images.to_data().try_into_vec_as::<f32>().unwrap();
            px.chunks(6).map(|img| ((img[0] + 1.0) * 127.5).round() as i64).collect()
        };
        assert_eq!(order(7, 1), order(7, 1));
        assert_ne!(order(7, 1), order(7, 2));
        let mut sorted = order(7, 1);
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn flip_mirrors_rows() {
        let shape = ImageShape { channels: 1, height: 1, width: 3 };
        let set = Arc::new(ImageSet::in_memory(shape, vec![0, 128, 255], vec![0], vec!["a".into()]));
        let augment = Augment { flip: true, ..Augment::default() };
        let seen: Vec<Vec<f32>> = (0..20)
            .map(|epoch| {
                let b = ImageBatches::shuffled(set.clone(), 1, 3, augment, PixelRange::Unit, Device::flex());
                b.batches(epoch).next().unwrap().images.to_data().try_into_vec_as::<f32>().unwrap()
            })
            .collect();
        assert!(seen.iter().any(|p| p[0] == 1.0 && p[2] == 0.0), "some epoch flips");
        assert!(seen.iter().any(|p| p[0] == 0.0 && p[2] == 1.0), "some epoch does not");
    }

    #[test]
    fn erasing_replaces_one_small_rectangle() {
        let shape = ImageShape { channels: 1, height: 10, width: 10 };
        let set = Arc::new(ImageSet::in_memory(shape, vec![255; 100], vec![0], vec!["a".into()]));
        let augment = Augment { erase: 1.0, ..Augment::default() };
        for epoch in 0..20 {
            let b = ImageBatches::shuffled(set.clone(), 1, 5, augment, PixelRange::Unit, Device::flex());
            let px = b.batches(epoch).next().unwrap().images.to_data().try_into_vec_as::<f32>().unwrap();
            let changed: Vec<(usize, usize)> = (0..100).filter(|&i| px[i] != 1.0).map(|i| (i / 10, i % 10)).collect();
            assert!(!changed.is_empty(), "epoch {epoch}: nothing erased");
            let rows = changed.iter().map(|p| p.0).max().unwrap() - changed.iter().map(|p| p.0).min().unwrap() + 1;
            let cols = changed.iter().map(|p| p.1).max().unwrap() - changed.iter().map(|p| p.1).min().unwrap() + 1;
            assert!(rows * cols <= 50, "epoch {epoch}: erased box {rows}x{cols} is over 40% of the image");
            assert!(changed.len() * 2 >= rows * cols, "epoch {epoch}: erased pixels do not fill a rectangle");
        }
    }
}
