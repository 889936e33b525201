//! Image folders: one sub-folder per class, e.g. `shoes/sneaker/001.jpg`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use rayon::prelude::*;

use super::classes::ClassMatcher;
use super::images::{ImageSet, LoadReport, check_header, decode, to_shape};
use crate::config::ImageShape;
use crate::reporter::Reporter;

const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "webp"];

/// Loads every image under `root/<class>/`, decoding in parallel; with `stream`, only reads each
/// file's header (to skip what does not decode) and leaves the pixels on disk.
///
/// With `known_classes`, folder names are matched to those classes (see [`ClassMatcher`]; a
/// folder matching no class is an error naming the nearest); otherwise the sorted folder names
/// are the classes. Hidden files and non-images are counted and skipped; an image that does not
/// decode is reported with its path and skipped, or fails the load when `strict`.
pub fn load_folder(
    root: &Path,
    shape: ImageShape,
    known_classes: Option<&ClassMatcher>,
    strict: bool,
    stream: bool,
    reporter: &dyn Reporter,
) -> Result<(ImageSet, LoadReport)> {
    ensure!(root.is_dir(), "{} is not a folder", root.display());
    let mut report = LoadReport::default();
    let mut class_dirs: Vec<(String, PathBuf)> = Vec::new();
    for entry in read_sorted(root)? {
        let name = file_name(&entry);
        if name.starts_with('.') {
            report.hidden += 1;
        } else if entry.is_dir() {
            class_dirs.push((name, entry));
        } else {
            report.not_images += 1;
        }
    }
    ensure!(!class_dirs.is_empty(), "{} has no class sub-folders (expected e.g. {0}/sneaker/001.png)", root.display());

    let (classes, labels): (Vec<String>, Vec<usize>) = match known_classes {
        Some(known) => {
            let found: Vec<Result<usize, String>> = class_dirs.iter().map(|(name, _)| known.find(name)).collect();
            let unknown: Vec<&String> = found.iter().filter_map(|r| r.as_ref().err()).collect();
            if !unknown.is_empty() {
                bail!(
                    "{}: {} folder(s) match none of the model's classes:\n  {}",
                    root.display(),
                    unknown.len(),
                    unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  ")
                );
            }
            (known.classes().to_vec(), found.into_iter().map(|r| r.expect("checked above")).collect())
        }
        None => (class_dirs.iter().map(|(name, _)| name.clone()).collect(), (0..class_dirs.len()).collect()),
    };

    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    for ((_, dir), &label) in class_dirs.iter().zip(&labels) {
        for file in read_sorted(dir)? {
            let file_name = file_name(&file);
            if file_name.starts_with('.') {
                report.hidden += 1;
            } else if file.is_file() && has_image_extension(&file) {
                files.push((file, label as u32));
            } else {
                report.not_images += 1;
            }
        }
    }

    let bar = reporter.progress(if stream { "checking" } else { "decoding" }, files.len());
    let done = std::sync::atomic::AtomicUsize::new(0);
    let decoded: Vec<Result<Vec<u8>, String>> = files
        .par_iter()
        .map(|(path, _)| {
            let image = match stream {
                true => check_header(path).map(|_| Vec::new()),
                false => decode(path).map(|img| to_shape(img, shape)),
            };
            bar.set(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            image
        })
        .collect();
    bar.finish();

    let mut pixels = Vec::with_capacity(if stream { 0 } else { files.len() * shape.pixels() });
    let mut kept = Vec::new();
    let mut labels = Vec::with_capacity(files.len());
    for ((path, label), result) in files.into_iter().zip(decoded) {
        match result {
            Ok(bytes) => {
                pixels.extend(bytes);
                labels.push(label);
                kept.push(path);
            }
            Err(reason) if strict => bail!("{}: {reason} (strict mode)", path.display()),
            Err(reason) => {
                reporter.warn(&format!("skipping {}: {reason}", path.display()));
                report.corrupt.push((path, reason));
            }
        }
    }
    ensure!(!labels.is_empty(), "{} holds no readable images", root.display());
    let set = match stream {
        true => ImageSet::on_disk(shape, kept, labels, classes),
        false => ImageSet::in_memory(shape, pixels, labels, classes),
    };
    Ok((set, report))
}

/// Whether the file name ends in an image extension we decode (any letter case).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn read_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("reading folder {}", dir.display()))?;
    entries.sort();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reporter::Silent;

    /// A folder of two classes with one good PNG and JPEG each, plus junk.
    fn fixture(root: &Path) {
        for class in ["bag", "sneaker"] {
            std::fs::create_dir_all(root.join(class)).unwrap();
        }
        let rgb = image::RgbImage::from_fn(40, 30, |x, _| image::Rgb([x as u8 * 6, 10, 200]));
        rgb.save(root.join("bag/a.PNG")).unwrap();
        rgb.save(root.join("sneaker/b.jpeg")).unwrap();
        std::fs::write(root.join("sneaker/.DS_Store"), "x").unwrap();
        std::fs::write(root.join("sneaker/notes.txt"), "not an image").unwrap();
        std::fs::write(root.join("README.md"), "top-level file").unwrap();
        std::fs::write(root.join("bag/broken.png"), b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    }

    #[test]
    fn loads_any_case_and_size_and_counts_what_it_skips() {
        let tmp = tempfile::tempdir().unwrap();
        fixture(tmp.path());
        let shape = ImageShape { channels: 1, height: 28, width: 28 };
        let (set, report) = load_folder(tmp.path(), shape, None, false, false, &Silent).unwrap();
        assert_eq!(set.classes, ["bag", "sneaker"]);
        assert_eq!(set.labels, [0, 1]);
        assert_eq!(set.memory_bytes(), 2 * 28 * 28);
        assert_eq!((report.hidden, report.not_images), (1, 2));
        assert_eq!(report.corrupt.len(), 1);
        assert!(report.corrupt[0].0.ends_with("bag/broken.png"));
        let rgb = ImageShape { channels: 3, height: 8, width: 8 };
        assert_eq!(load_folder(tmp.path(), rgb, None, false, false, &Silent).unwrap().0.memory_bytes(), 2 * 3 * 64);
    }

    #[test]
    fn a_streamed_folder_keeps_paths_and_decodes_on_use() {
        let tmp = tempfile::tempdir().unwrap();
        fixture(tmp.path());
        let shape = ImageShape { channels: 3, height: 8, width: 8 };
        let (decoded, _) = load_folder(tmp.path(), shape, None, false, false, &Silent).unwrap();
        let (streamed, report) = load_folder(tmp.path(), shape, None, false, true, &Silent).unwrap();
        assert!(streamed.is_streamed() && streamed.memory_bytes() == 0);
        assert_eq!(report.corrupt.len(), 1, "the broken header is found without decoding");
        assert_eq!(streamed.labels, decoded.labels);
        for i in 0..2 {
            assert_eq!(streamed.image(i), decoded.image(i), "image {i} decodes the same on use");
        }
        let whole = streamed.image_cropped(0, [0.0, 0.0, 1.0, 1.0]);
        assert_eq!(whole, *decoded.image(0), "a crop of the whole photo is the photo");
        let corner = streamed.image_cropped(0, [0.0, 0.0, 0.25, 0.25]);
        assert_eq!(corner.len(), shape.pixels());
        assert_ne!(corner, whole, "a corner is not the whole photo");
        assert!(load_folder(tmp.path(), shape, None, true, true, &Silent).is_err(), "strict mode still refuses the broken file");
    }

    #[test]
    fn strict_mode_fails_on_a_corrupt_image_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        fixture(tmp.path());
        let err = load_folder(tmp.path(), ImageShape::default(), None, true, false, &Silent).unwrap_err();
        assert!(format!("{err:#}").contains("broken.png"), "{err:#}");
    }

    #[test]
    fn classes_are_matched_to_a_model_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        fixture(tmp.path());
        let known: Vec<String> = ["Sneaker", "coat", "Bag"].map(String::from).to_vec();
        let matcher = ClassMatcher::exact(&known);
        let (set, _) = load_folder(tmp.path(), ImageShape::default(), Some(&matcher), false, false, &Silent).unwrap();
        assert_eq!(set.labels, [2, 0], "bag is class 2 and sneaker class 0 of the model");
        assert_eq!(set.classes, known);
        let two = ClassMatcher::exact(&["SNEAKER".into(), "coat".into()]);
        let err = load_folder(tmp.path(), ImageShape::default(), Some(&two), false, false, &Silent).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("\"bag\" is none of the classes") && msg.contains("nearest"), "{msg}");
        assert!(!msg.contains("\"sneaker\" is none"), "{msg}");
    }
}
