//! The `[data]` section of the image families (classification and generation).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{ClassMapSetting, DataConfig};

/// Where image data comes from and how images are shaped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDataSection {
    pub train: DataSource,
    /// Validation data; when absent, `valid_fraction` of `train` is held out with the run's seed.
    #[serde(default)]
    pub valid: Option<DataSource>,
    /// Held-out test data, evaluated once at the end of training.
    #[serde(default)]
    pub test: Option<DataSource>,
    #[serde(default = "default_valid_fraction")]
    pub valid_fraction: f64,
    /// Class names in label order (IDX files carry none; image folders name their own).
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Folder names that differ from the class names (beyond case, spaces, hyphens, underscores
    /// and slashes): a TOML file or inline table of `"folder" = "class"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_map: Option<ClassMapSetting>,
    /// Use only the first N training examples (quick experiments).
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub image: ImageShape,
    #[serde(default)]
    pub augment: Augment,
    /// Leave image folders on disk and decode each photo when a batch needs it (on worker
    /// threads, ahead of the model): memory that does not grow with the number of photos.
    #[serde(default)]
    pub stream: bool,
}

fn default_valid_fraction() -> f64 {
    0.1
}

/// One data set on disk: IDX image + label files, or a folder with one sub-folder per class.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<PathBuf>,
}

/// A data source with its layout decided.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceLayout {
    Idx { images: PathBuf, labels: PathBuf },
    Folder(PathBuf),
}

impl DataSource {
    /// The source a command line names: an image folder, or an IDX images file and its labels.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Self> {
        match paths {
            [folder] if folder.is_dir() => Ok(Self { folder: Some(folder.clone()), ..Default::default() }),
            [images, labels] => Ok(Self { images: Some(images.clone()), labels: Some(labels.clone()), ..Default::default() }),
            [file] => bail!("{} is not a folder; give an image folder, or an IDX images file and its labels file", file.display()),
            _ => bail!("--data takes an image folder, or an IDX images file followed by its labels file"),
        }
    }

    /// Decides the layout, or says exactly what is missing.
    pub fn layout(&self) -> Result<SourceLayout> {
        match (&self.images, &self.labels, &self.folder) {
            (Some(images), Some(labels), None) => Ok(SourceLayout::Idx { images: images.clone(), labels: labels.clone() }),
            (None, None, Some(folder)) => Ok(SourceLayout::Folder(folder.clone())),
            (Some(_), None, None) => bail!("`images` is set but `labels` is missing"),
            (None, Some(_), None) => bail!("`labels` is set but `images` is missing"),
            (None, None, None) => {
                bail!("give either `folder = \"...\"` or both `images` and `labels` (IDX files)")
            }
            _ => bail!("give either `folder` or `images` + `labels`, not both"),
        }
    }
}

/// The image shape the model takes; every input is converted to it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Default for ImageShape {
    fn default() -> Self {
        Self { channels: 1, height: 28, width: 28 }
    }
}

impl ImageShape {
    pub fn pixels(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Training-time augmentation (off by default, as in the reference recipe).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Mirror images left-right with probability 0.5.
    pub flip: bool,
    /// Shift images by up to this many pixels in each direction (zero padding), like a random crop.
    pub shift: usize,
    /// Probability of random erasing (Zhong et al. 2017): one rectangle of 2–40% of the image, of
    /// aspect ratio 0.3–3.3, filled with random pixels.
    pub erase: f64,
    /// Random resized crop (torchvision's `RandomResizedCrop`): a random 8–100% of the photo, of
    /// aspect ratio 3/4–4/3, resized to the input size; taken from the full-size photo when
    /// `data.stream` is on.
    pub resized_crop: bool,
}

impl DataConfig for ImageDataSection {
    fn check(&self) -> Result<()> {
        let f = self.valid_fraction;
        if self.valid.is_none() && !(0.0 < f && f < 1.0) {
            bail!("data.valid_fraction must be between 0 and 1 (exclusive), got {f}");
        }
        let shape = self.image;
        if ![1, 3].contains(&shape.channels) || shape.height == 0 || shape.width == 0 {
            bail!("data.image must have 1 or 3 channels and a non-zero size, got {shape:?}");
        }
        let erase = self.augment.erase;
        if !(0.0..=1.0).contains(&erase) {
            bail!("data.augment.erase is a probability between 0 and 1, got {erase}");
        }
        for (name, source) in [("train", Some(&self.train)), ("valid", self.valid.as_ref()), ("test", self.test.as_ref())] {
            if let Some(source) = source {
                source.layout().with_context(|| format!("data.{name}"))?;
            }
        }
        Ok(())
    }
}
