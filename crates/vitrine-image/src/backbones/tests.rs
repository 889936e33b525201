//! The backbones against torchvision: fixtures written by `scripts/make-backbone-fixtures.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};

use super::*;

/// The committed reduced-width fixtures, or the folder `VITRINE_BACKBONE_FIXTURES` names (the
/// script's `--full-width` output).
fn fixtures() -> PathBuf {
    match std::env::var_os("VITRINE_BACKBONE_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/backbones"),
    }
}

/// The architecture of a fixture file, built at the fixture's width for its 10 classes.
fn build(arch: &str, device: &Device) -> Backbone {
    build_for(arch, 10, device)
}

/// [`build`] with a head for `classes`.
fn build_for(arch: &str, classes: usize, device: &Device) -> Backbone {
    let widths: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("fixtures.json")).unwrap()).unwrap();
    let w = &widths[arch];
    let width = w["width"].as_u64().unwrap_or(64) as usize;
    let mult = w["width_mult"].as_f64().unwrap_or(1.0);
    match arch {
        "resnet18" => Backbone::Resnet(Resnet::new(ResnetDepth::R18, width, classes, 0.0, device)),
        "resnet34" => Backbone::Resnet(Resnet::new(ResnetDepth::R34, width, classes, 0.0, device)),
        "resnet50" => Backbone::Resnet(Resnet::new(ResnetDepth::R50, width, classes, 0.0, device)),
        "mobilenet_v3_large" => Backbone::Mobilenet(Mobilenet::new(MobilenetSize::Large, mult, classes, 0.0, device)),
        "mobilenet_v3_small" => Backbone::Mobilenet(Mobilenet::new(MobilenetSize::Small, mult, classes, 0.0, device)),
        _ => unreachable!(),
    }
}

const ARCHES: [&str; 5] = ["resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "mobilenet_v3_small"];

/// Every tensor of a safetensors file, by name, as f32 values and shape.
fn tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                safetensors::Dtype::I64 => view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
                other => panic!("{name}: unexpected {other:?}"),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

fn tensor4(t: &(Vec<usize>, Vec<f32>), device: &Device) -> Tensor<4> {
    let shape: [usize; 4] = t.0.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(t.1.clone(), shape), device)
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    vitrine_core::metrics::largest_gap(a, b)
}

#[test]
fn backbones_match_torchvision_to_1e4() {
    let device = Device::flex();
    for arch in ARCHES {
        let io = tensors(&fixtures().join(format!("{arch}-io.safetensors")));
        let input = tensor4(&io["input"], &device);
        let expected = &io["logits"].1;
        let fresh = build(arch, &device).valid();
        let fresh_logits = fresh.forward_normalized(input.clone()).into_data().try_to_vec::<f32>().unwrap();
        let model = load_torchvision(build(arch, &device), &fixtures().join(format!("{arch}.safetensors")), true).unwrap().valid();
        let logits = model.forward_normalized(input).into_data().try_to_vec::<f32>().unwrap();
        // To 1e-4 of the logits' scale (at least 1): float sums in another order drift with depth
        // and width, e.g. full-width ResNet-50's logits of ~10 differ by ~1e-4.
        let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let difference = max_difference(&logits, expected);
        assert!(difference < 1e-4 * scale, "{arch}: logits differ from torchvision's by {difference} (largest logit {scale})");
        assert!(max_difference(&fresh_logits, expected) > 1e-2, "{arch}: a fresh network should not match");
    }
}

#[test]
fn export_writes_torchvisions_state_dict_back() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    for arch in ARCHES {
        let source = fixtures().join(format!("{arch}.safetensors"));
        let model = load_torchvision(build(arch, &device), &source, true).unwrap();
        let out = tmp.path().join(format!("{arch}.safetensors"));
        save_torchvision(&model, WeightsFormat::Safetensors, &out, &[("architecture", arch.to_string())]).unwrap();
        let (original, exported) = (tensors(&source), tensors(&out));
        // torchvision's `num_batches_tracked` counters are not weights; its load_state_dict fills them in.
        let weights: BTreeMap<&String, &(Vec<usize>, Vec<f32>)> = original.iter().filter(|(k, _)| !k.ends_with("num_batches_tracked")).collect();
        assert_eq!(weights.keys().copied().collect::<Vec<_>>(), exported.keys().collect::<Vec<_>>(), "{arch}: the same names");
        for (name, (shape, values)) in weights {
            assert_eq!(&exported[name].0, shape, "{arch}: {name}");
            assert!(max_difference(&exported[name].1, values) == 0.0, "{arch}: {name} differs");
        }
    }
}

#[test]
fn a_head_for_other_classes_is_new_and_the_rest_loads() {
    let device = Device::flex();
    let path = fixtures().join("resnet18.safetensors");
    let fresh = build_for("resnet18", 3, &device);
    // Whole-network loading refuses a head of another shape; backbone-only loading takes it.
    assert!(load_torchvision(fresh.clone(), &path, true).is_err());
    let loaded = load_torchvision(fresh, &path, false).unwrap();
    let io = tensors(&fixtures().join("resnet18-io.safetensors"));
    let input = tensor4(&io["input"], &device);
    let full = load_torchvision(build("resnet18", &device), &path, true).unwrap().valid();
    let features = |m: &Backbone| m.features(input.clone()).into_data().try_to_vec::<f32>().unwrap();
    let difference = max_difference(&features(&full), &features(&loaded.valid()));
    assert!(difference < 1e-6, "the backbone's features are torchvision's: {difference}");
    let wrong = load_torchvision(build("resnet34", &device), &path, false).unwrap_err().to_string();
    assert!(wrong.contains("resnet18.safetensors") && wrong.contains("missing"), "{wrong}");
    let err = load_torchvision(build("resnet18", &device), Path::new("nowhere.safetensors"), false).unwrap_err().to_string();
    assert!(err.contains("nowhere.safetensors") && err.contains("do not exist"), "{err}");
}

#[test]
fn safetensors_store_round_trip_keeps_every_parameter() {
    // A guard on burn-store's behaviour this module relies on: enum variants left out of names.
    let device = Device::flex();
    let model = build("mobilenet_v3_small", &device);
    let mut store = SafetensorsStore::from_bytes(None).skip_enum_variants(true);
    model.save_into(&mut store).unwrap();
    let mut again = build("mobilenet_v3_small", &device);
    let result = again.load_from(&mut store).unwrap();
    assert!(result.missing.is_empty() && result.errors.is_empty(), "{result:?}");
}

#[test]
fn pickled_pth_checkpoints_load_like_safetensors() {
    let device = Device::flex();
    for arch in ["resnet18", "mobilenet_v3_small"] {
        let pth = fixtures().join(format!("{arch}.pth"));
        if !pth.is_file() {
            continue; // --full-width output has no .pth
        }
        let io = tensors(&fixtures().join(format!("{arch}-io.safetensors")));
        let model = load_torchvision(build(arch, &device), &pth, true).unwrap().valid();
        let logits = model.forward_normalized(tensor4(&io["input"], &device)).into_data().try_to_vec::<f32>().unwrap();
        let difference = max_difference(&logits, &io["logits"].1);
        assert!(difference < 1e-4, "{arch}.pth: logits differ from torchvision's by {difference}");
    }
}

#[test]
fn every_backbone_fine_tunes_from_its_fixture() {
    use vitrine_core::classifier::ClassifierTask;
    use vitrine_core::config::{ImageShape, OptimizerConfig};
    use vitrine_core::data::{BatchSource, ImageBatch, ImageBatches, PixelRange, load_idx};
    use vitrine_core::train::{TrainTask, build_optimizer};

    let device = Device::flex().autodiff();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fashion-mnist-sample");
    let shape = ImageShape { channels: 3, height: 32, width: 32 };
    let set = load_idx(&samples.join("train-images-idx3-ubyte.gz"), &samples.join("train-labels-idx1-ubyte.gz"), shape, None).unwrap().truncate(64);
    let batch: ImageBatch = ImageBatches::ordered(std::sync::Arc::new(set), 64, PixelRange::Unit, device.clone()).batches(0).next().unwrap();
    for arch in ARCHES {
        let model = load_torchvision(build_for(arch, 10, &device).with_backbone_lr(0.1), &fixtures().join(format!("{arch}.safetensors")), false).unwrap();
        let mut task = ClassifierTask::<Backbone, ImageBatch>::new(model, build_optimizer(&OptimizerConfig::default(), None), &device);
        let losses: Vec<f32> = (0..15).map(|_| task.train_step(batch.clone(), 3e-3).loss_sum.into_scalar::<f32>() / 64.0).collect();
        assert!(losses[14] < 0.7 * losses[0], "{arch}: the loss falls: {losses:?}");
    }
}
