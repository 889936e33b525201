//! Parsing, overrides, defaults and errors of experiment configs.

use super::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Model {
    name: String,
}

impl ModelSection for Model {
    type Eval = NoEval;
}

type Config = ExperimentConfig<ImageDataSection, Model>;

const MINIMAL: &str = r#"
task = "image-classification"
[data.train]
folder = "x"
[model]
name = "m"
"#;

#[test]
fn defaults_fill_the_rest() {
    let c = Config::parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.train.epochs, 10);
    assert_eq!(c.train.batch_size, 128);
    assert_eq!(c.run.seed, 42);
    assert_eq!(c.data.train.layout().unwrap(), SourceLayout::Folder("x".into()));
    // The resolved config round-trips.
    let again = Config::parse(&c.to_toml().unwrap(), &[]).unwrap();
    assert_eq!(again.train.epochs, 10);
}

#[test]
fn unknown_key_names_the_nearest_valid_one() {
    let text = format!("{MINIMAL}\n[train]\nepoch = 3\n");
    let err = format!("{:#}", Config::parse(&text, &[]).unwrap_err());
    assert!(err.contains("unknown key `epoch`: did you mean `epochs`?"), "{err}");
    assert!(err.contains("line"), "error should point at the line: {err}");
}

#[test]
fn eval_section_only_where_the_family_takes_it() {
    let text = format!("{MINIMAL}\n[eval]\nsamples = 100\n");
    let err = format!("{:#}", Config::parse(&text, &[]).unwrap_err());
    assert!(err.contains("`[eval]`") && err.contains("image-classification"), "{err}");
    assert!(Config::parse(MINIMAL, &["eval.samples=100".into()]).is_err());

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Scoring {
        samples: usize,
    }
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Generator {
        name: String,
    }
    impl ModelSection for Generator {
        type Eval = Scoring;
        const TAKES_EVAL_SECTION: bool = true;
    }
    let config = ExperimentConfig::<ImageDataSection, Generator>::parse(&text, &[]).unwrap();
    assert_eq!(config.eval_settings().samples, 100);
    let config = ExperimentConfig::<ImageDataSection, Generator>::parse(MINIMAL, &[]).unwrap();
    assert_eq!(config.eval_settings(), Scoring::default());
}

#[test]
fn overrides_are_typed_and_checked() {
    let sets = ["train.epochs=3".to_string(), "train.optimizer.lr=1e-4".to_string()];
    let c = Config::parse(MINIMAL, &sets).unwrap();
    assert_eq!(c.train.epochs, 3);
    assert_eq!(c.train.optimizer.lr, 1e-4);
    let err = Config::parse(MINIMAL, &["train.epohcs=3".into()]).unwrap_err();
    assert!(format!("{err:#}").contains("did you mean `epochs`"), "{err:#}");
    let err = Config::parse(MINIMAL, &["train.optimizer.kind=adan".into()]).unwrap_err();
    assert!(format!("{err:#}").contains("unknown value `adan`: did you mean `adam`?"), "{err:#}");
    let err = Config::parse(MINIMAL, &["train.epochs=0".into()]).unwrap_err();
    assert!(format!("{err:#}").contains("epochs must be at least 1"));
}

#[test]
fn half_specified_sources_are_rejected() {
    let text = MINIMAL.replace("folder = \"x\"", "images = \"a.gz\"");
    let err = format!("{:#}", Config::parse(&text, &[]).unwrap_err());
    assert!(err.contains("data.train") && err.contains("`labels` is missing"), "{err}");
}

#[test]
fn family_defaults_fill_only_what_the_file_leaves_out() {
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Recipes {
        name: String,
    }
    impl ModelSection for Recipes {
        type Eval = NoEval;
        // Each model its own recipe, as the generation family has.
        fn defaults(model: Option<&str>) -> &'static [&'static str] {
            match model {
                Some("slow") => &["train.epochs=20", "train.batch_size=32"],
                _ => &["train.epochs=5", "train.batch_size=64"],
            }
        }
    }
    type Config = ExperimentConfig<ImageDataSection, Recipes>;
    let c = Config::parse(MINIMAL, &[]).unwrap();
    assert_eq!((c.train.epochs, c.train.batch_size), (5, 64));
    let text = format!("{MINIMAL}\n[train]\nepochs = 7\n");
    let c = Config::parse(&text, &["train.batch_size=32".into()]).unwrap();
    assert_eq!((c.train.epochs, c.train.batch_size), (7, 32), "the file and --set win over defaults");
    let c = Config::parse(MINIMAL, &["model.name=slow".into()]).unwrap();
    assert_eq!((c.train.epochs, c.train.batch_size), (20, 32), "--set model.name picks that model's recipe");
}

#[test]
fn schedules() {
    let step = ScheduleConfig { kind: ScheduleKind::Step, step_size: 2, gamma: 0.5, min_lr: 0.0 };
    assert_eq!(step.lr_at(1.0, 1, 10), 1.0);
    assert_eq!(step.lr_at(1.0, 3, 10), 0.5);
    assert_eq!(step.lr_at(1.0, 5, 10), 0.25);
    let cos = ScheduleConfig { kind: ScheduleKind::Cosine, min_lr: 0.1, ..Default::default() };
    assert!((cos.lr_at(1.0, 1, 5) - 1.0).abs() < 1e-12);
    assert!((cos.lr_at(1.0, 5, 5) - 0.1).abs() < 1e-12);
    assert!((cos.lr_at(1.0, 3, 5) - 0.55).abs() < 1e-12);
}
