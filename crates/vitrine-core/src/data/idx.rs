//! IDX files (MNIST, Fashion-MNIST), gzipped or not.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use image::{DynamicImage, GrayImage};

use super::images::{ImageSet, to_shape};
use crate::config::ImageShape;

const UNSIGNED_BYTE: u8 = 0x08;

/// Reads an IDX image file and its label file into an [`ImageSet`] of `shape`.
pub fn load_idx(images: &Path, labels: &Path, shape: ImageShape, classes: Option<&[String]>) -> Result<ImageSet> {
    let labels_path = labels;
    let (dims, pixels) = read_idx(images, 3)?;
    let (label_dims, labels) = read_idx(labels_path, 1)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    ensure!(n == label_dims[0], "{} holds {n} images but {} holds {} labels", images.display(), labels_path.display(), label_dims[0]);
    let labels: Vec<u32> = labels.into_iter().map(u32::from).collect();
    let classes: Vec<String> = match classes {
        Some(names) => names.to_vec(),
        None => {
            let max = labels.iter().copied().max().unwrap_or(0);
            (0..=max).map(|c| c.to_string()).collect()
        }
    };
    if let Some(pos) = labels.iter().position(|&l| l as usize >= classes.len()) {
        bail!("{}: label {} at index {pos} is out of range for {} classes", labels_path.display(), labels[pos], classes.len());
    }
    let pixels = if shape == (ImageShape { channels: 1, height: rows, width: cols }) {
        pixels
    } else {
        let mut out = Vec::with_capacity(n * shape.pixels());
        for img in pixels.chunks_exact(rows * cols) {
            let grey = GrayImage::from_raw(cols as u32, rows as u32, img.to_vec()).expect("sized above");
            out.extend(to_shape(DynamicImage::ImageLuma8(grey), shape));
        }
        out
    };
    Ok(ImageSet::in_memory(shape, pixels, labels, classes))
}

/// Reads an unsigned-byte IDX file with `rank` dimensions: its sizes and data.
fn read_idx(path: &Path, rank: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).with_context(|| format!("{}: corrupt gzip data", path.display()))?;
        out
    } else {
        raw
    };
    let what = if rank == 1 { "label" } else { "image" };
    ensure!(bytes.len() >= 4 && bytes[0] == 0 && bytes[1] == 0, "{}: not an IDX file (bad magic number)", path.display());
    ensure!(
        bytes[2] == UNSIGNED_BYTE && bytes[3] as usize == rank && bytes.len() >= 4 + 4 * rank,
        "{}: expected an IDX {what} file (unsigned bytes, {rank} dimension(s)), found type 0x{:02x} with {} dimension(s)",
        path.display(),
        bytes[2],
        bytes[3]
    );
    let dims: Vec<usize> = bytes[4..4 + 4 * rank].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let expected: usize = dims.iter().product();
    let data = &bytes[4 + 4 * rank..];
    ensure!(data.len() == expected, "{}: header says {dims:?} ({expected} bytes) but the file holds {} bytes of data (truncated?)", path.display(), data.len());
    Ok((dims, data.to_vec()))
}

/// Writes images (`n × rows × cols` bytes) as an IDX file, gzipped when the name ends in `.gz`.
pub fn write_idx_images(path: &Path, rows: usize, cols: usize, pixels: &[u8]) -> Result<()> {
    let n = pixels.len() / (rows * cols);
    write_idx(path, &[n, rows, cols], pixels)
}

/// Writes labels as an IDX file, gzipped when the name ends in `.gz`.
pub fn write_idx_labels(path: &Path, labels: &[u8]) -> Result<()> {
    write_idx(path, &[labels.len()], labels)
}

fn write_idx(path: &Path, dims: &[usize], data: &[u8]) -> Result<()> {
    let mut bytes = vec![0, 0, UNSIGNED_BYTE, dims.len() as u8];
    for &d in dims {
        bytes.extend((d as u32).to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        gz.write_all(&bytes)?;
        gz.finish()?;
    } else {
        let mut file = file;
        file.write_all(&bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, n: usize, gz: bool) -> (std::path::PathBuf, std::path::PathBuf) {
        let ext = if gz { ".gz" } else { "" };
        let images = dir.join(format!("img{ext}"));
        let labels = dir.join(format!("lbl{ext}"));
        let pixels: Vec<u8> = (0..n * 4).map(|i| i as u8).collect();
        write_idx_images(&images, 2, 2, &pixels).unwrap();
        write_idx_labels(&labels, &(0..n as u8).map(|i| i % 3).collect::<Vec<_>>()).unwrap();
        (images, labels)
    }

    #[test]
    fn reads_plain_and_gzipped_files() {
        let tmp = tempfile::tempdir().unwrap();
        for gz in [false, true] {
            let (images, labels) = write_pair(tmp.path(), 5, gz);
            let shape = ImageShape { channels: 1, height: 2, width: 2 };
            let set = load_idx(&images, &labels, shape, None).unwrap();
            assert_eq!(set.len(), 5);
            assert_eq!(set.classes, ["0", "1", "2"]);
            assert_eq!(*set.image(1), [4, 5, 6, 7]);
        }
    }

    #[test]
    fn the_shipped_sample_is_real_fashion_mnist() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fashion-mnist-sample");
        let set = load_idx(&dir.join("train-images-idx3-ubyte.gz"), &dir.join("train-labels-idx1-ubyte.gz"), ImageShape::default(), None).unwrap();
        assert_eq!(set.len(), 3000);
        assert!(set.class_counts().iter().all(|&c| c > 250), "{:?}", set.class_counts());
    }

    #[test]
    fn bad_files_are_explained() {
        let tmp = tempfile::tempdir().unwrap();
        let (images, labels) = write_pair(tmp.path(), 5, false);
        let shape = ImageShape { channels: 1, height: 2, width: 2 };
        // Truncated image data.
        let bytes = std::fs::read(&images).unwrap();
        let cut = tmp.path().join("cut");
        std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
        let err = format!("{:#}", load_idx(&cut, &labels, shape, None).unwrap_err());
        assert!(err.contains("cut") && err.contains("truncated"), "{err}");
        // Labels and images swapped.
        let err = format!("{:#}", load_idx(&labels, &images, shape, None).unwrap_err());
        assert!(err.contains("expected an IDX image file"), "{err}");
        // Not an IDX file at all.
        let junk = tmp.path().join("junk.txt");
        std::fs::write(&junk, "hello world, not idx").unwrap();
        let err = format!("{:#}", load_idx(&junk, &labels, shape, None).unwrap_err());
        assert!(err.contains("junk.txt") && err.contains("not an IDX file"), "{err}");
        // Counts disagree.
        let (_, three) = write_pair(&tmp.path().join("."), 3, true);
        let err = format!("{:#}", load_idx(&images, &three, shape, None).unwrap_err());
        assert!(err.contains("5 images") && err.contains("3 labels"), "{err}");
        // More labels than named classes.
        let two: Vec<String> = vec!["a".into(), "b".into()];
        let err = format!("{:#}", load_idx(&images, &labels, shape, Some(&two)).unwrap_err());
        assert!(err.contains("label 2") && err.contains("2 classes"), "{err}");
    }
}
