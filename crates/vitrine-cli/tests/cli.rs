//! End to end: the `vitrine` binary trains on the shipped sample, then evaluates, predicts and
//! exports, and explains bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn vitrine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vitrine")).args(args).current_dir(repo()).output().expect("vitrine runs")
}

fn ok(args: &[&str]) -> String {
    let out = vitrine(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "vitrine {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn fails(args: &[&str]) -> String {
    let out = vitrine(args);
    assert!(!out.status.success(), "vitrine {args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "an error, not a panic:\n{stderr}");
    stderr
}

/// One quick-start run, trained once through the CLI and shared by the tests.
fn trained_run() -> &'static Path {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &RUN.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("quick");
        let out = ok(&[
            "train",
            "configs/quickstart.toml",
            "--set",
            "train.epochs=3",
            "--set",
            "data.limit=2400",
            "--backend",
            "flex",
            "--out",
            run.to_str().unwrap(),
        ]);
        assert!(out.contains("device: flex"), "{out}");
        assert!(out.contains("epoch 3/3"), "plain per-epoch lines when not a terminal:\n{out}");
        assert!(out.contains("test: accuracy"), "{out}");
        (tmp, run)
    })
    .1
}

#[test]
fn train_writes_a_complete_run() {
    let run = trained_run();
    for file in ["config.toml", "classes.json", "metrics.csv", "model.bpk", "loss.png", "report.md", "checkpoints/latest"] {
        assert!(run.join(file).exists(), "{file}");
    }
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("epochs = 3") && config.contains("limit = 2400"), "resolved config keeps overrides:\n{config}");
    // A finished run resumes to nothing new rather than training again.
    let out = ok(&["train", "--resume", run.to_str().unwrap(), "--backend", "flex"]);
    assert!(out.contains("resuming") && !out.contains("epoch 4"), "{out}");
}

#[test]
fn eval_reports_accuracy_f1_and_confusion() {
    let run = trained_run().to_str().unwrap();
    let images = "datasets/fashion-mnist-sample/t10k-images-idx3-ubyte.gz";
    let labels = "datasets/fashion-mnist-sample/t10k-labels-idx1-ubyte.gz";
    let text = ok(&["eval", run, "--data", images, labels]);
    assert!(text.contains("accuracy") && text.contains("macro-F1") && text.contains("Ankle boot"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&ok(&["eval", run, "--data", images, labels, "--json"])).unwrap();
    assert_eq!(json["examples"], 1000);
    assert!(json["accuracy"].as_f64().unwrap() > 0.5, "{json}");
    assert_eq!(json["confusion"]["counts"].as_array().unwrap().len(), 10);
    assert!(trained_run().join("eval-confusion.png").is_file());
}

/// Writes sample test images as PNG files in class folders named like the run's classes.
fn image_folder(root: &Path, classes: &[&str]) -> Vec<(PathBuf, usize)> {
    image_folder_of(root, classes, false)
}

/// [`image_folder`], each image mirrored left to right when `mirrored`.
fn image_folder_of(root: &Path, classes: &[&str], mirrored: bool) -> Vec<(PathBuf, usize)> {
    let dir = repo().join("datasets/fashion-mnist-sample");
    let set = vitrine_core::data::load_idx(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
        vitrine_core::config::ImageShape::default(),
        None,
    )
    .unwrap();
    (0..60)
        .map(|i| {
            let label = set.labels[i] as usize;
            let dir = root.join(classes[label].replace('/', "-"));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{i}.png"));
            let mut picture = image::GrayImage::from_raw(28, 28, set.image(i).to_vec()).unwrap();
            if mirrored {
                image::imageops::flip_horizontal_in_place(&mut picture);
            }
            picture.save(&path).unwrap();
            (path, label)
        })
        .collect()
}

#[test]
fn mirror_averaging_sees_an_image_and_its_mirror_alike() {
    let run = trained_run().to_str().unwrap();
    let classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
    let tmp = tempfile::tempdir().unwrap();
    let (plain, mirrored) = (tmp.path().join("plain"), tmp.path().join("mirrored"));
    image_folder_of(&plain, &classes, false);
    image_folder_of(&mirrored, &classes, true);
    // A folder cannot be named "T-shirt/top": leave that class out.
    for dir in [&plain, &mirrored] {
        std::fs::remove_dir_all(dir.join("T-shirt-top")).ok();
    }
    let eval = |dir: &Path, extra: &[&str]| -> serde_json::Value {
        let args = [&["eval", run, "--data", dir.to_str().unwrap(), "--json"][..], extra].concat();
        serde_json::from_str(&ok(&args)).unwrap()
    };
    let (a, b) = (eval(&plain, &["--mirror"]), eval(&mirrored, &["--mirror"]));
    assert!(a["examples"].as_u64().unwrap() > 40 && a["examples"] == b["examples"], "{a} {b}");
    assert_eq!(a["confusion"], b["confusion"], "averaged over both orientations, the orientation cannot matter");
    assert_ne!(eval(&plain, &[])["confusion"], eval(&mirrored, &[])["confusion"], "without it, it does");

    // Predictions too: each file and its mirrored copy get the same classes and probabilities.
    let predict = |dir: &Path| -> Vec<(String, serde_json::Value)> {
        let out: serde_json::Value = serde_json::from_str(&ok(&["predict", run, dir.to_str().unwrap(), "--mirror", "--json"])).unwrap();
        let mut rows: Vec<(String, serde_json::Value)> = out
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (Path::new(p["path"].as_str().unwrap()).strip_prefix(dir).unwrap().display().to_string(), p["top"].clone()))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    };
    let (a, b) = (predict(&plain), predict(&mirrored));
    assert!(a.len() > 40);
    assert_eq!(a, b);
}

#[test]
fn folder_names_map_to_the_run_classes_for_eval_predict_and_train() {
    let run = trained_run().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (folder, map) = (tmp.path().join("shop"), tmp.path().join("map.toml"));
    // A shop's export: lower case and hyphens, and "t-shirt" for "T-shirt/top".
    let names = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"];
    image_folder(&folder, &names);
    let err = fails(&["eval", run, "--data", folder.to_str().unwrap()]);
    assert!(err.contains("\"t-shirt\"") && err.contains("nearest is \"T-shirt/top\""), "{err}");
    assert!(!err.contains("\"ankle-boot\""), "case and hyphens alone are matched: {err}");

    std::fs::write(&map, "\"t-shirt\" = \"T-shirt/top\"\n").unwrap();
    let eval = ok(&["eval", run, "--data", folder.to_str().unwrap(), "--class-map", map.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_str(&eval).unwrap();
    assert_eq!(json["examples"], 60);
    assert!(json["accuracy"].as_f64().unwrap() > 0.5, "{json}");
    let predicted = ok(&["predict", run, folder.join("t-shirt").to_str().unwrap(), "--class-map", map.to_str().unwrap(), "--top-k", "10"]);
    assert!(predicted.contains("t-shirt ") && !predicted.contains("T-shirt/top"), "classes shown under the map's names:\n{predicted}");

    // Training: the config's class names, the folder's own names, the same map.
    let config = tmp.path().join("shop.toml");
    std::fs::write(
        &config,
        format!(
            "task = \"image-classification\"\n[data]\ntrain = {{ folder = {:?} }}\nclasses = {:?}\n[model]\nname = \"fashion-cnn\"\n[train]\nepochs = 1\nbatch_size = 16\n",
            folder.to_str().unwrap(),
            ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
        ),
    )
    .unwrap();
    let out = tmp.path().join("run");
    let err = fails(&["train", config.to_str().unwrap(), "--backend", "flex", "--out", out.to_str().unwrap()]);
    assert!(err.contains("t-shirt") && err.contains("nearest"), "{err}");
    ok(&["train", config.to_str().unwrap(), "--class-map", map.to_str().unwrap(), "--backend", "flex", "--out", out.to_str().unwrap()]);
    let classes = std::fs::read_to_string(out.join("classes.json")).unwrap();
    assert!(classes.contains("T-shirt/top") && classes.contains("Ankle boot"), "{classes}");
}

#[test]
fn a_streamed_photo_folder_trains_evaluates_and_benches() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("photos");
    image_folder(&folder, &["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]);
    let config = tmp.path().join("stream.toml");
    std::fs::write(
        &config,
        format!(
            "task = \"image-classification\"\n[data]\ntrain = {{ folder = {:?} }}\nstream = true\nimage = {{ channels = 3, height = 32, width = 32 }}\naugment = {{ flip = true, resized_crop = true }}\n[model]\nname = \"fashion-cnn\"\n[train]\nepochs = 2\nbatch_size = 16\n",
            folder.to_str().unwrap()
        ),
    )
    .unwrap();
    let run = tmp.path().join("run");
    let out = ok(&["train", config.to_str().unwrap(), "--backend", "flex", "--out", run.to_str().unwrap()]);
    assert!(out.contains("epoch 2/2"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ok(&["eval", run.to_str().unwrap(), "--data", folder.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(json["examples"], 60);

    let bench = ok(&[
        "bench",
        "--model",
        "fashion-cnn",
        "--backend",
        "flex",
        "--data",
        folder.to_str().unwrap(),
        "--image-size",
        "32",
        "--steps",
        "2",
        "--warmup",
        "0",
        "--json",
    ]);
    let bench: serde_json::Value = serde_json::from_str(&bench).unwrap();
    assert_eq!(bench[0]["images"], 60);
    assert!(bench[0]["loader_images_per_sec"].as_f64().unwrap() > 0.0 && bench[0]["train_samples_per_sec"].as_f64().unwrap() > 0.0, "{bench}");
    let error = fails(&["bench", "--model", "fashion-cnn", "--devices", "flex,ndarray", "--data", folder.to_str().unwrap(), "--steps", "1"]);
    assert!(error.contains("leave out --data"), "{error}");
}

#[test]
fn predict_names_classes_for_files_and_folders() {
    let run = trained_run();
    let tmp = tempfile::tempdir().unwrap();
    let classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
    let files = image_folder(tmp.path(), &classes);
    std::fs::write(tmp.path().join("Bag/broken.png"), "not a png").unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["predict", run.to_str().unwrap(), tmp.path().to_str().unwrap(), "--top-k", "3", "--json"])).unwrap();
    let predictions = json.as_array().unwrap();
    assert_eq!(predictions.len(), files.len(), "the broken file is skipped, the rest predicted");
    let mut correct = 0;
    for p in predictions {
        let top = p["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let path = PathBuf::from(p["path"].as_str().unwrap());
        let truth = files.iter().find(|(f, _)| *f == path).unwrap().1;
        correct += (top[0]["class"] == classes[truth]) as usize;
    }
    assert!(correct * 2 > files.len(), "most predictions right: {correct}/{}", files.len());
    let text = ok(&["predict", run.to_str().unwrap(), files[0].0.to_str().unwrap()]);
    assert!(text.contains("%"), "{text}");
    let err = fails(&["predict", run.to_str().unwrap(), tmp.path().to_str().unwrap(), "--strict"]);
    assert!(err.contains("broken.png"), "{err}");
}

#[test]
fn export_writes_pytorch_named_safetensors() {
    let run = trained_run();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fashion.safetensors");
    ok(&["export", run.to_str().unwrap(), "--format", "safetensors", "--out", out.to_str().unwrap()]);
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = |name: &str| st.tensor(name).unwrap_or_else(|_| panic!("{name} in {:?}", st.names())).shape().to_vec();
    assert_eq!(shape("conv1.weight"), [32, 1, 3, 3]);
    assert_eq!(shape("bn1.weight"), [32]);
    assert_eq!(shape("bn1.bias"), [32]);
    assert_eq!(shape("bn4.running_var"), [64]);
    assert_eq!(shape("fc1.weight"), [256, 3136], "PyTorch's [out, in]");
    assert_eq!(shape("fc2.bias"), [10]);
    let bpk = tmp.path().join("fashion.bpk");
    ok(&["export", run.to_str().unwrap(), "--format", "burnpack", "--out", bpk.to_str().unwrap()]);
    assert!(bpk.is_file());
}

#[test]
fn bad_input_is_explained_not_panicked() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(repo().join("configs/quickstart.toml")).unwrap().replace("epochs = 5", "epoch = 5")).unwrap();
    let err = fails(&["train", bad.to_str().unwrap()]);
    assert!(err.contains("did you mean `epochs`"), "{err}");
    let err = fails(&["config", "show", "configs/quickstart.toml", "--set", "train.optimizer.kind=adamax"]);
    assert!(err.contains("adamax"), "{err}");
    let err = fails(&["eval", "no/such/run", "--data", "x"]);
    assert!(err.contains("no/such/run"), "{err}");
    // Sizes of 0 and odd durations are refused by the parser (they panicked in a tensor
    // operation or in `Duration`, in the benchmark's process).
    for (option, value, why) in [("--batch-size", "0", "at least 1"), ("--seq-len", "0", "at least 1"), ("--seconds", "nan", "positive number of seconds")] {
        let err = fails(&["bench", "--model", "text-lstm-attn", "--backend", "flex", option, value]);
        assert!(err.contains(option) && err.contains(why), "{err}");
    }
    // A flag of another family's models is refused, not ignored.
    let err = fails(&["bench", "--model", "fashion-cnn", "--backend", "flex", "--rank-only"]);
    assert!(err.contains("--rank-only applies to recommendation") && err.contains("bpr-mf") && err.contains("not to fashion-cnn"), "{err}");

    // An image folder with a class the model does not know names it and the nearest class.
    let run = trained_run();
    let folder = tmp.path().join("eval");
    image_folder(&folder, &["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]);
    std::fs::create_dir_all(folder.join("Smartwatch")).unwrap();
    let err = fails(&["eval", run.to_str().unwrap(), "--data", folder.to_str().unwrap()]);
    assert!(err.contains("\"Smartwatch\" is none of the classes") && err.contains("nearest is"), "{err}");
}

#[test]
fn config_show_prints_every_default() {
    let out = ok(&["config", "show", "configs/quickstart.toml", "--set", "train.epochs=7"]);
    for key in ["epochs = 7", "batch_size = 128", "seed = 42", "kind = \"adam\"", "lr = 0.001", "kind = \"constant\"", "erase = 0.0"] {
        assert!(out.contains(key), "{key} in:\n{out}");
    }
    // Every shipped config resolves, so none drifts from the schema unnoticed.
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        ok(&["config", "show", path.to_str().unwrap()]);
    }
    let err = fails(&["config", "show", "configs/resnet-small.toml", "--set", "data.augment.erase=1.5"]);
    assert!(err.contains("data.augment.erase") && err.contains("1.5"), "{err}");
}

/// One text run of the reference network on the shipped English CSV, trained once through the CLI
/// and shared by the tests.
fn text_run() -> &'static Path {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &RUN.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("reviews");
        let out = ok(&[
            "train",
            "configs/reviews-csv.toml",
            "--set",
            "model.name=\"text-lstm-attn\"",
            "--set",
            "train.epochs=2",
            "--set",
            "model.hidden=32",
            "--set",
            "data.tokenizer.vocab_size=1000",
            "--backend",
            "flex",
            "--out",
            run.to_str().unwrap(),
        ]);
        assert!(out.contains("epoch 2/2") && out.contains("AUROC"), "{out}");
        assert!(out.contains("dedup dropped"), "the CSV repeats a few sentences:\n{out}");
        (tmp, run)
    })
    .1
}

#[test]
fn text_run_trains_evaluates_predicts_and_exports() {
    let run = text_run();
    let r = run.to_str().unwrap();
    for file in ["tokenizer.json", "model.bpk", "report.md", "confusion.png"] {
        assert!(run.join(file).is_file(), "{file}");
    }
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("AUROC") && report.contains(" test examples"), "split sizes and AUROC in the report:\n{report}");

    let eval = ok(&["eval", r, "--data", "datasets/amazon-review-snippets/reviews.csv", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&eval).unwrap();
    assert!(json["auroc"].as_f64().unwrap() > 0.5 && json["per_class"].as_array().unwrap().len() == 2, "{json}");
    assert!(json["baseline_accuracy"].as_f64().unwrap() > 0.7, "the classical baseline beside the model: {json}");
    let human = ok(&["eval", r, "--data", "datasets/amazon-review-snippets/reviews.csv"]);
    assert!(human.contains("baseline accuracy") && human.contains("logistic regression"), "{human}");

    let out = ok(&["predict", r, "--text", "I love this camera, great pictures", "--text", "Terrible, it broke and support never answered", "--json"]);
    let predictions: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(predictions.as_array().unwrap().len(), 2);
    assert!(predictions[0]["top_tokens"].as_array().unwrap().len() == 5, "{predictions}");
    let human = ok(&["predict", r, "--text", "great sound", "--top-tokens", "2"]);
    assert!(human.contains("attended to:") && human.contains("%"), "{human}");
    let tmp = tempfile::tempdir().unwrap();
    let blank = tmp.path().join("blank.txt");
    std::fs::write(&blank, "\n   \n").unwrap();
    let err = fails(&["predict", r, "--file", blank.to_str().unwrap()]);
    assert!(err.contains("blank.txt has no texts"), "an empty file named: {err}");

    let st = tmp.path().join("text.safetensors");
    ok(&["export", r, "--format", "safetensors", "--out", st.to_str().unwrap()]);
    let bytes = std::fs::read(&st).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(tensors.names().contains(&"lstm.weight_ih_l0_reverse"), "{:?}", tensors.names());
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_folder(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_data_parallel_run_is_evaluated_and_predicted_on_its_first_device_alone() {
    // A run trained on two devices, used where only the first exists: `wgpu:7` is an adapter no
    // machine here has, so probing it would fail.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("two-devices");
    copy_folder(text_run(), &run);
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("[run]\n") && !config.contains("devices ="), "{config}");
    let config = config.replacen("[run]\n", "[run]\ndevices = [\"flex\", \"wgpu:7\"]\n", 1);
    std::fs::write(run.join("config.toml"), config).unwrap();
    let r = run.to_str().unwrap();
    let eval = ok(&["eval", r, "--data", "datasets/amazon-review-snippets/reviews.csv", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&eval).unwrap();
    assert!(json["accuracy"].as_f64().unwrap() > 0.5, "{json}");
    let out = ok(&["predict", r, "--text", "great sound", "--json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap().as_array().unwrap().len(), 1);
    // Training still needs every device, and says which one is missing.
    let error = fails(&["train", "--resume", r]);
    assert!(error.contains("wgpu:7"), "{error}");
}

#[test]
fn text_input_errors_name_the_file_and_what_is_wrong() {
    let run = text_run().to_str().unwrap();
    let err = fails(&["predict", run, "some-image.png"]);
    assert!(err.contains("is a text run") && err.contains("--text"), "{err}");
    let err = fails(&["predict", run]);
    assert!(err.contains("--text"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("other.csv");
    std::fs::write(&csv, "body,stars\nnice,5\n").unwrap();
    let err = fails(&["eval", run, "--data", csv.to_str().unwrap()]);
    assert!(err.contains("other.csv") && err.contains("no column `review`"), "{err}");

    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, "task = \"text-classification\"\n[data]\ntrain = { file = \"x.csv\", text_colum = \"review\" }\n").unwrap();
    let err = fails(&["train", config.to_str().unwrap(), "--out", tmp.path().join("never").to_str().unwrap()]);
    assert!(err.contains("did you mean `text_column`?"), "{err}");
    assert!(!tmp.path().join("never").exists(), "a bad config creates no run folder");
}

const FASHION: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

fn png_size(path: &Path) -> (u32, u32) {
    image::image_dimensions(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn autoencoder_trains_reconstructs_interpolates_evaluates_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("ae");
    let run_arg = run.to_str().unwrap();
    let out = ok(&["train", "configs/ae-quickstart.toml", "--set", "train.epochs=2", "--set", "data.limit=1200", "--backend", "flex", "--out", run_arg]);
    assert!(out.contains("epoch 2/2") && out.contains("test: MSE"), "{out}");
    assert!(run.join("samples/epoch-002.png").is_file());
    assert!(std::fs::read_to_string(run.join("report.md")).unwrap().contains("test MSE"));

    let images = image_folder(&tmp.path().join("photos"), &FASHION);
    let grid = tmp.path().join("recon.png");
    let out = ok(&["reconstruct", run_arg, tmp.path().join("photos").to_str().unwrap(), "--out", grid.to_str().unwrap()]);
    assert!(out.contains("reconstructed 60 images"), "{out}");
    // 8 per row at 2× scale with 2-pixel gaps; 60 originals + 60 reconstructions = 16 rows.
    assert_eq!(png_size(&grid), (2 + 8 * 58, 2 + 16 * 58));
    let strip = tmp.path().join("strip.png");
    let (a, b) = (images[0].0.to_str().unwrap(), images[1].0.to_str().unwrap());
    ok(&["interpolate", run_arg, a, b, "--steps", "5", "--out", strip.to_str().unwrap()]);
    assert_eq!(png_size(&strip), (2 + 5 * 58, 60));

    let sample = repo().join("datasets/fashion-mnist-sample");
    let (images_idx, labels_idx) = (sample.join("t10k-images-idx3-ubyte.gz"), sample.join("t10k-labels-idx1-ubyte.gz"));
    let out = ok(&["eval", run_arg, "--data", images_idx.to_str().unwrap(), labels_idx.to_str().unwrap(), "--json"]);
    let scores: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mse = scores["mse"].as_f64().unwrap();
    assert!(mse > 0.0 && mse < 0.1 && scores["psnr"].as_f64().unwrap() > 10.0, "{scores}");

    let st_path = tmp.path().join("ae.safetensors");
    ok(&["export", run_arg, "--format", "safetensors", "--out", st_path.to_str().unwrap()]);
    let bytes = std::fs::read(&st_path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = |name: &str| st.tensor(name).unwrap_or_else(|_| panic!("{name} in {:?}", st.names())).shape().to_vec();
    assert_eq!(shape("conv1.weight"), [32, 1, 4, 4]);
    assert_eq!(shape("fc_mu.weight"), [32, 3136], "PyTorch's [out, in]");
    assert_eq!(shape("deconv1.weight"), [64, 32, 4, 4], "PyTorch's ConvTranspose2d [in, out, k, k]");

    let err = fails(&["generate", run_arg]);
    assert!(err.contains("plain autoencoder") && err.contains("variational"), "{err}");
    let classifier = trained_run().to_str().unwrap();
    let err = fails(&["eval", run_arg, "--data", images_idx.to_str().unwrap(), labels_idx.to_str().unwrap(), "--classifier", classifier]);
    assert!(err.contains("plain autoencoder"), "{err}");

    // A finished run continues for more epochs from its last checkpoint.
    let out = ok(&["train", "--resume", run_arg, "--epochs", "3", "--backend", "flex"]);
    assert!(out.contains("resuming") && out.contains("epoch 3/3") && !out.contains("epoch 2/3"), "{out}");
    assert!(std::fs::read_to_string(run.join("config.toml")).unwrap().contains("epochs = 3"));
    assert_eq!(std::fs::read_to_string(run.join("metrics.csv")).unwrap().lines().count(), 4, "a header and 3 epochs");
}

#[test]
fn variational_autoencoder_samples_and_is_scored_by_a_classifier() {
    let classifier = trained_run().to_str().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("vae");
    let run_arg = run.to_str().unwrap();
    let set = ["--set", "model.variational=true", "--set", "train.epochs=1", "--set", "data.limit=600", "--set", "eval.samples=200"];
    let out = ok(&[&["train", "configs/ae-quickstart.toml", "--backend", "flex", "--out", run_arg][..], &set[..]].concat());
    assert!(out.contains("train_kl"), "{out}");
    let grid = tmp.path().join("samples.png");
    ok(&["generate", run_arg, "--n", "9", "--out", grid.to_str().unwrap()]);
    assert_eq!(png_size(&grid), (2 + 3 * 58, 2 + 3 * 58));

    let sample = repo().join("datasets/fashion-mnist-sample");
    let (images_idx, labels_idx) = (sample.join("t10k-images-idx3-ubyte.gz"), sample.join("t10k-labels-idx1-ubyte.gz"));
    let data = [images_idx.to_str().unwrap(), labels_idx.to_str().unwrap()];
    let out = ok(&["eval", run_arg, "--data", data[0], data[1], "--classifier", &classifier, "--json"]);
    let scores: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(scores["mse"].as_f64().unwrap() > 0.0, "{scores}");
    assert_eq!(scores["samples"]["samples"].as_u64(), Some(200), "eval.samples of the run's config: {scores}");
    let frechet = scores["samples"]["frechet"].as_f64().unwrap();
    assert!(frechet.is_finite() && frechet > 0.0, "{scores}");
    assert!(scores["samples"].get("class_match").is_none(), "an autoencoder has no classes to match: {scores}");
    // The same seed draws the same samples; another seed, others.
    let again: serde_json::Value = serde_json::from_str(&ok(&["eval", run_arg, "--data", data[0], data[1], "--classifier", &classifier, "--json"])).unwrap();
    assert_eq!(again["samples"]["frechet"], scores["samples"]["frechet"]);
    let other: serde_json::Value =
        serde_json::from_str(&ok(&["eval", run_arg, "--data", data[0], data[1], "--classifier", &classifier, "--seed", "8", "--json"])).unwrap();
    assert_ne!(other["samples"]["frechet"], scores["samples"]["frechet"]);
}

#[test]
fn conditional_gan_trains_generates_per_class_and_is_scored_by_a_classifier() {
    let classifier = trained_run().to_str().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("gan");
    let run_arg = run.to_str().unwrap();
    let out = ok(&[
        "train",
        "configs/gan-quickstart.toml",
        "--set",
        "train.epochs=1",
        "--set",
        "data.limit=640",
        "--set",
        &format!("eval.classifier={classifier}"),
        "--set",
        "eval.samples=200",
        "--backend",
        "flex",
        "--out",
        run_arg,
    ]);
    assert!(out.contains("train_g_loss") && out.contains("frechet") && out.contains("class_match"), "{out}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(metrics.lines().next().unwrap().contains("frechet"), "{metrics}");
    assert!(run.join("frechet.png").is_file() && run.join("samples/epoch-001.png").is_file());

    // One row per class by default; one class on request; single files with --out-dir.
    let grid = tmp.path().join("all.png");
    ok(&["generate", run_arg, "--n", "30", "--out", grid.to_str().unwrap()]);
    assert_eq!(png_size(&grid), (2 + 3 * 58, 2 + 10 * 58));
    let sneakers = tmp.path().join("sneakers.png");
    let out = ok(&["generate", run_arg, "--n", "16", "--class", "sneaker", "--seed", "3", "--out", sneakers.to_str().unwrap()]);
    assert!(out.contains("16 images of sneaker"), "{out}");
    let each = tmp.path().join("each");
    ok(&["generate", run_arg, "--n", "5", "--out-dir", each.to_str().unwrap()]);
    assert_eq!(std::fs::read_dir(&each).unwrap().count(), 5);
    let err = fails(&["generate", run_arg, "--class", "Smartwatch"]);
    assert!(err.contains("Smartwatch") && err.contains("Ankle boot"), "{err}");

    let sample = repo().join("datasets/fashion-mnist-sample");
    let (images_idx, labels_idx) = (sample.join("t10k-images-idx3-ubyte.gz"), sample.join("t10k-labels-idx1-ubyte.gz"));
    let out = ok(&["eval", run_arg, "--data", images_idx.to_str().unwrap(), labels_idx.to_str().unwrap(), "--classifier", &classifier, "--json"]);
    let scores: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(scores["samples"]["frechet"].as_f64().unwrap() > 0.0, "{scores}");
    let class_match = scores["samples"]["class_match"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&class_match), "{scores}");

    let st_path = tmp.path().join("gan.safetensors");
    ok(&["export", run_arg, "--format", "safetensors", "--out", st_path.to_str().unwrap()]);
    let bytes = std::fs::read(&st_path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = |name: &str| st.tensor(name).unwrap_or_else(|_| panic!("{name} in {:?}", st.names())).shape().to_vec();
    assert_eq!(shape("generator.fc.weight"), [6272, 64 + 16]);
    assert_eq!(shape("generator.label_embedding.weight"), [10, 16]);
    assert_eq!(shape("discriminator.conv1.weight"), [64, 2, 4, 4], "image plus label plane");
    assert_eq!(shape("discriminator.fc.weight"), [1, 6272]);

    let err = fails(&["predict", run_arg, "x.png"]);
    assert!(err.contains("image-generation run") && err.contains("vitrine generate"), "{err}");
}

#[test]
fn recommender_trains_recommends_finds_similar_items_segments_evaluates_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("recs");
    let r = run.to_str().unwrap();
    let out = ok(&["train", "configs/recommend-quickstart.toml", "--set", "train.epochs=15", "--backend", "flex", "--out", r]);
    assert!(out.contains("test: recall@10") && out.contains("popularity baseline"), "{out}");

    let json: serde_json::Value = serde_json::from_str(&ok(&["recommend", r, "--user", "1", "--user", "7", "--k", "5", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[0]["items"].as_array().unwrap().len(), 5);
    assert!(json[0]["items"][0]["name"].is_string(), "names from the item file: {json}");
    let err = fails(&["recommend", r, "--user", "C999"]);
    assert!(err.contains("unknown customer `C999`"), "{err}");

    let all = tmp.path().join("recs.csv");
    let out = ok(&["recommend", r, "--all-users", "--k", "3", "--out", all.to_str().unwrap()]);
    assert!(out.contains("300 customers"), "{out}");
    let csv = std::fs::read_to_string(&all).unwrap();
    assert_eq!(csv.lines().count(), 1 + 300 * 3, "a header and three rows per customer");
    assert!(csv.starts_with("user,rank,item,name\n"), "{}", &csv[..40]);

    let out = ok(&["similar", r, "--item", "50", "--k", "4"]);
    assert!(out.contains("Star Wars") && out.lines().count() == 5, "{out}");
    let err = fails(&["similar", r, "--item", "nope"]);
    assert!(err.contains("unknown item `nope`"), "{err}");

    let segments = tmp.path().join("segments.csv");
    let out = ok(&["segment", r, "--k", "2..4", "--out", segments.to_str().unwrap()]);
    assert!(out.contains("silhouette by k:") && out.contains("segment 0"), "{out}");
    assert_eq!(std::fs::read_to_string(&segments).unwrap().lines().count(), 301);
    assert!(tmp.path().join("segments.png").is_file());

    // The run's own test split scores as it did at the end of training.
    let test = run.join("split-test.csv");
    let scores: serde_json::Value = serde_json::from_str(&ok(&["eval", r, "--data", test.to_str().unwrap(), "--k", "10,20", "--json"])).unwrap();
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let trained = report["held_out"].as_array().unwrap().iter().find(|f| f[0] == "test ndcg@10").unwrap()[1].as_f64().unwrap();
    assert!((scores["at"]["10"]["ndcg"].as_f64().unwrap() - trained).abs() < 1e-6, "{scores} vs {trained}");
    assert!(scores["at"]["20"]["recall"].as_f64().unwrap() >= scores["at"]["10"]["recall"].as_f64().unwrap());

    let st = tmp.path().join("bpr.safetensors");
    ok(&["export", r, "--out", st.to_str().unwrap()]);
    let bytes = std::fs::read(&st).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(tensors.tensor("item_embedding.weight").unwrap().shape(), [1682, 64]);

    // The bench's serving latency: one customer ranked a call, training untimed (null).
    let flags: Vec<&str> =
        "bench --model bpr-mf --backend flex --users 40 --items 90 --count 800 --rank-customers 1 --rank-only --steps 5 --single".split(' ').collect();
    let bench = ok(&flags);
    let bench: serde_json::Value = serde_json::from_str(bench.trim()).unwrap();
    assert!(bench["train_samples_per_sec"].is_null() && bench["customers_per_call"] == 1, "{bench}");
    assert!(bench["inference_samples_per_sec"].as_f64().unwrap() > 0.0, "{bench}");

    let err = fails(&["predict", r, "x.png"]);
    assert!(err.contains("recommendation run") && err.contains("vitrine recommend"), "{err}");
    let err = fails(&["generate", r]);
    assert!(err.contains("image-generation runs") && err.contains("recommendation run"), "{err}");
    let err = fails(&["eval", r, "--data", test.to_str().unwrap(), "--mirror"]);
    assert!(err.contains("--mirror applies to image-classification runs only"), "{err}");
}

#[test]
fn a_shop_export_trains_from_its_config_alone_and_names_its_junk_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("shop");
    let out = ok(&["train", "configs/shop-export.toml", "--set", "train.epochs=2", "--backend", "flex", "--out", run.to_str().unwrap()]);
    assert!(out.contains("skipped 4 bad row(s)"), "{out}");
    assert!(out.contains("orders.csv: line 204") && out.contains("`customer` is empty"), "{out}");
    assert!(out.contains("last Tuesday") && out.contains("SKU-99999") && out.contains("exactly"), "{out}");
    let recs = ok(&["recommend", run.to_str().unwrap(), "--user", "C000001", "--k", "3"]);
    assert!(recs.contains("customer C000001:") && recs.contains("SKU-"), "{recs}");
    let err = fails(&["train", "configs/shop-export.toml", "--strict", "--out", tmp.path().join("strict").to_str().unwrap()]);
    assert!(err.contains("orders.csv: line"), "{err}");
}

#[test]
fn a_text_run_reads_item_descriptions_for_the_hybrid_recommender() {
    // The text run of the review tests reads each movie's title; its pooled vectors join the
    // item tower's inputs.
    let text = text_run().canonicalize().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let sample = repo().join("datasets/movielens-sample");
    let config = tmp.path().join("hybrid.toml");
    std::fs::write(
        &config,
        format!(
            "task = \"recommendation\"\n[data]\ninteractions = {{ file = \"{0}/ml-100k.inter\", timestamp = \"timestamp\" }}\n\
             items = {{ file = \"{0}/ml-100k.item\", id = \"item_id\", multi = {{ class = \" \" }}, text_run = {{ run = \"{1}\", column = \"movie_title\" }} }}\n\
             limit = 4000\n[model]\nname = \"two-tower\"\nembedding_dim = 16\nhidden = []\n[train]\nepochs = 1\nbatch_size = 256\n",
            sample.display(),
            text.display()
        ),
    )
    .unwrap();
    let run = tmp.path().join("run");
    ok(&["train", config.to_str().unwrap(), "--backend", "flex", "--out", run.to_str().unwrap()]);
    let st = tmp.path().join("hybrid.safetensors");
    ok(&["export", run.to_str().unwrap(), "--out", st.to_str().unwrap()]);
    let bytes = std::fs::read(&st).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let numbers = tensors.tensor("item_tower.numbers.weight").unwrap_or_else(|_| panic!("{:?}", tensors.names()));
    assert_eq!(numbers.shape(), [16, 64], "the text run's 64 pooled values per title, projected to 16");
}
