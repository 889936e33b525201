//! Images as PNG: grids of samples, single images.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use burn::prelude::*;
use image::{DynamicImage, GrayImage, RgbImage};
use vitrine_core::run_dir::save_atomic;

/// Sample grids of each epoch, `samples/epoch-NNN.png`.
pub const SAMPLES_DIR: &str = "samples";
/// Images per grid row, and rows of a GAN's grid when unconditional.
pub const GRID_COLUMNS: usize = 8;

/// The run-relative path of an epoch's sample grid.
pub fn sample_grid_name(epoch: usize) -> String {
    format!("{SAMPLES_DIR}/epoch-{epoch:03}.png")
}

/// Pixels between grid cells, drawn in mid grey so black and white images both stand out.
const GAP: u32 = 2;
const GAP_SHADE: u8 = 128;

/// Images `[n, c, h, w]` (c = 1 or 3) with values in [0, 1], read back to the host.
pub struct ImageBatchData {
    pub values: Vec<f32>,
    pub count: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageBatchData {
    pub fn from_tensor(images: Tensor<4>) -> Self {
        let [count, channels, height, width] = images.dims();
        let values = images.clamp(0.0, 1.0).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 image data");
        Self { values, count, channels, height, width }
    }

    /// Image `i` as an 8-bit picture, `scale` times larger (nearest neighbour).
    pub fn picture(&self, i: usize, scale: u32) -> DynamicImage {
        let (h, w, c) = (self.height, self.width, self.channels);
        let plane = h * w;
        let start = i * c * plane;
        let byte = |v: f32| (v * 255.0).round() as u8;
        let (sw, sh) = (w as u32 * scale, h as u32 * scale);
        let at = |x: u32, y: u32| (y / scale) as usize * w + (x / scale) as usize;
        if c == 1 {
            DynamicImage::ImageLuma8(GrayImage::from_fn(sw, sh, |x, y| image::Luma([byte(self.values[start + at(x, y)])])))
        } else {
            DynamicImage::ImageRgb8(RgbImage::from_fn(sw, sh, |x, y| {
                let p = at(x, y);
                image::Rgb([0, 1, 2].map(|k| byte(self.values[start + k * plane + p])))
            }))
        }
    }
}

/// Writes the images as one grid with `columns` per row, each `scale` times larger.
pub fn save_grid(images: &ImageBatchData, columns: usize, scale: u32, path: &Path) -> Result<()> {
    ensure!(images.count > 0, "no images to draw");
    let columns = columns.clamp(1, images.count) as u32;
    let rows = (images.count as u32).div_ceil(columns);
    let (cw, ch) = (images.width as u32 * scale, images.height as u32 * scale);
    let mut canvas = RgbImage::from_pixel(GAP + columns * (cw + GAP), GAP + rows * (ch + GAP), image::Rgb([GAP_SHADE; 3]));
    for i in 0..images.count {
        let (col, row) = (i as u32 % columns, i as u32 / columns);
        let picture = images.picture(i, scale).to_rgb8();
        image::imageops::replace(&mut canvas, &picture, (GAP + col * (cw + GAP)) as i64, (GAP + row * (ch + GAP)) as i64);
    }
    save_png(&DynamicImage::ImageRgb8(canvas), path)
}

/// Writes each image to `dir/prefix-NNN.png`; returns the paths.
pub fn save_each(images: &ImageBatchData, dir: &Path, prefix: &str, scale: u32) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    (0..images.count)
        .map(|i| {
            let path = dir.join(format!("{prefix}-{i:03}.png"));
            save_png(&images.picture(i, scale), &path)?;
            Ok(path)
        })
        .collect()
}

fn save_png(picture: &DynamicImage, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    save_atomic(path, |tmp| picture.save_with_format(tmp, image::ImageFormat::Png).with_context(|| format!("writing {}", path.display())))
}
