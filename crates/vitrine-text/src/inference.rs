//! Using a trained text run: evaluation, prediction with the tokens the model attended to, and export.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail, ensure};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::Serialize;
use vitrine_core::backend::on_compute_pool;
use vitrine_core::classifier::{argmax, logits_on_compute_pool, score_by};
use vitrine_core::config::ConfigFile;
use vitrine_core::data::{BatchSource, ClassMap, ClassMatcher, SkippedRow};
use vitrine_core::export::{WeightsFormat, export_weights, load_weights};
use vitrine_core::plot::confusion_png;
use vitrine_core::report::ClassificationScores;
use vitrine_core::run_dir::{CONFIG_FILE, RunDir, WEIGHTS_FILE};

use crate::baseline::{BASELINE_FILE, ClassicalBaseline};
use crate::config::{TASK, TextConfig, TextSource, TextSourceConfig, resolve};
use crate::data::{NGRAMS_FILE, NgramDictionary, SPLIT_FILES, TokenBatches, TokenInput, load_text, tokenize};
use crate::model::TextClassifier;
use crate::tokenizer::TextTokenizer;
use crate::training::TOKENIZER_FILE;

/// A trained text run, ready for inference: config, class names, tokenizer and weights.
pub struct TextRun {
    pub run: RunDir,
    pub config: TextConfig,
    pub classes: Vec<String>,
    pub tokenizer: TextTokenizer,
    /// The training split's n-grams, for a model that embeds them from a dictionary.
    pub ngrams: Option<Arc<NgramDictionary>>,
    /// The fitted classical baseline whose probabilities are averaged with the model's
    /// (`model.blend_baseline`).
    pub blend: Option<ClassicalBaseline>,
}

impl TextRun {
    /// Opens a finished run folder; other families' runs are a clear error.
    pub fn open(path: &Path) -> Result<Self> {
        let run = RunDir::open(path)?;
        let file = ConfigFile::read(&run.file(CONFIG_FILE))?;
        if file.task() != TASK {
            bail!("{} is a `{}` run, not a text classifier", path.display(), file.task());
        }
        Self::open_with(run, &file)
    }

    /// Opens a finished run whose saved config is `file`.
    pub fn open_with(run: RunDir, file: &ConfigFile) -> Result<Self> {
        let classes = run.trained_classes()?;
        let config = resolve(file, &[])?;
        let tokenizer = TextTokenizer::load(&run.file(TOKENIZER_FILE), config.data.tokenizer.max_len)?;
        let blend = config.model.blend_baseline.then(|| ClassicalBaseline::load(&run.file(BASELINE_FILE))).transpose()?;
        let ngrams =
            config.model.ngram_dictionary().then(|| NgramDictionary::load(&run.file(NGRAMS_FILE), config.model.ngram_order)).transpose()?.map(Arc::new);
        Ok(Self { run, config, classes, tokenizer, ngrams, blend })
    }

    /// The trained model in inference mode.
    pub fn load(&self, device: &Device) -> Result<TextClassifier> {
        let model = TextClassifier::new(
            &self.config.model,
            self.tokenizer.vocab_size(),
            self.ngrams.as_ref().map_or(0, |d| d.rows()),
            self.config.data.tokenizer.max_len,
            self.classes.len(),
            device,
        )?;
        Ok(load_weights(model, &self.run.file(WEIGHTS_FILE), self.config.model.name.name())?.valid())
    }

    /// The classical baseline fitted on the run's own training split, if it kept one.
    pub fn baseline(&self) -> Result<Option<ClassicalBaseline>> {
        let path = self.run.file(SPLIT_FILES[0]);
        if !path.is_file() {
            return Ok(None);
        }
        let train = &self.config.data.train;
        let source = TextSource::Table { path, text_column: train.text_column.clone(), label_column: train.label_column.clone() };
        let (set, _) = load_text(&source, Some(&ClassMatcher::exact(&self.classes)), false)?;
        let (texts, labels) = set.texts_and_labels();
        Ok(Some(ClassicalBaseline::fit(&texts, &labels, self.classes.len())?))
    }
}

/// Scores labelled batches in order; with `blend`, the model's class probabilities averaged with
/// the classical baseline's on the same `texts` (in the same order).
pub fn score_texts(
    model: &TextClassifier,
    batches: TokenBatches,
    texts: &[&str],
    blend: Option<&ClassicalBaseline>,
    classes: &[String],
) -> ClassificationScores {
    let logits = logits_on_compute_pool(model);
    let Some(baseline) = blend else {
        return score_by(logits, batches.batches(0), classes);
    };
    let next = std::cell::Cell::new(0usize);
    score_by(
        |input: TokenInput| {
            let probabilities = softmax(logits(input), 1);
            let n = probabilities.dims()[0];
            let start = next.replace(next.get() + n);
            blended(probabilities, &texts[start..start + n], Some(baseline)).clamp_min(1e-7).log()
        },
        batches.batches(0),
        classes,
    )
}

/// Class probabilities `[n, classes]` of `texts`, averaged with the baseline's when there is one.
fn blended(probabilities: Tensor<2>, texts: &[&str], blend: Option<&ClassicalBaseline>) -> Tensor<2> {
    let Some(baseline) = blend else {
        return probabilities;
    };
    let [n, k] = probabilities.dims();
    let rows: Vec<f32> = texts.iter().flat_map(|t| baseline.probabilities(t)).collect();
    let theirs = Tensor::<2>::from_data(TensorData::new(rows, [n, k]), &probabilities.device());
    (probabilities + theirs) * 0.5
}

/// A run's scores on labelled text, beside the classical baseline's.
#[derive(Debug, Serialize)]
pub struct TextEvaluation {
    #[serde(flatten)]
    pub scores: ClassificationScores,
    /// The accuracy of the classical baseline ([`crate::baseline`]) fitted on the run's training split, on the same texts (runs
    /// that kept no split have none).
    pub baseline_accuracy: Option<f64>,
    #[serde(skip)]
    pub skipped: Vec<SkippedRow>,
}

/// Evaluates a run on labelled text: one CSV/TSV/JSONL file (with the run's column names), or one
/// `.txt` file per class named after the class (`pos.txt`, `neg.txt`). Nothing is deduplicated.
pub fn evaluate(
    trained: &TextRun,
    paths: &[PathBuf],
    class_map: &ClassMap,
    device: &Device,
    strict: bool,
    confusion_out: Option<&Path>,
) -> Result<TextEvaluation> {
    let matcher = ClassMatcher::new(&trained.classes, class_map)?;
    let train = &trained.config.data.train;
    let source = match paths {
        [file] if !file.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt")) => {
            TextSourceConfig { file: Some(file.clone()), per_class: None, text_column: train.text_column.clone(), label_column: train.label_column.clone() }
        }
        _ => {
            let mut per_class = std::collections::BTreeMap::new();
            for path in paths {
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let class = matcher
                    .find(&stem)
                    .map_err(|reason| anyhow::anyhow!("{}: a per-class text file is named after one of the run's classes: {reason}", path.display()))?;
                per_class.insert(trained.classes[class].clone(), path.clone());
            }
            TextSourceConfig { per_class: Some(per_class), ..Default::default() }
        }
    };
    let (set, skipped) = load_text(&source.source()?, Some(&matcher), strict || trained.config.run.strict)?;
    let tokens = Arc::new(tokenize(&trained.tokenizer, &set)?);
    let (texts, labels) = set.texts_and_labels();
    let batches = TokenBatches::ordered(tokens, 256, trained.tokenizer.pad_id(), device.clone()).with_ngrams(trained.ngrams.clone());
    let scores = score_texts(&trained.load(device)?, batches, &texts, trained.blend.as_ref(), &trained.classes);
    if let Some(path) = confusion_out {
        confusion_png(path, &scores.confusion, &trained.classes)?;
    }
    // A blended run keeps its fitted baseline; others fit it again from their training split.
    let fitted = if trained.blend.is_some() { None } else { trained.baseline()? };
    let baseline_accuracy = trained.blend.as_ref().or(fitted.as_ref()).map(|baseline| baseline.accuracy(&texts, &labels));
    Ok(TextEvaluation { scores, baseline_accuracy, skipped })
}

/// The predicted class of one text, and the tokens the model weighed most.
#[derive(Debug, Clone, Serialize)]
pub struct TextPrediction {
    pub text: String,
    pub label: String,
    pub probability: f32,
    /// Every class's probability, in the run's class order.
    pub probabilities: Vec<(String, f32)>,
    /// The tokens with the highest attention weight, highest first.
    pub top_tokens: Vec<(String, f32)>,
}

/// Predicts each text's class and its `top_tokens` most-attended tokens.
pub fn predict(trained: &TextRun, texts: &[String], top_tokens: usize, device: &Device) -> Result<Vec<TextPrediction>> {
    ensure!(!texts.is_empty(), "no texts to predict");
    let model = trained.load(device)?;
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(256) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let encoded = trained.tokenizer.encode_tokens(&refs)?;
        let ids: Vec<&[u32]> = encoded.iter().map(|(ids, _)| ids.as_slice()).collect();
        let input = TokenInput::from_ids(&ids, trained.ngrams.as_deref(), trained.tokenizer.pad_id(), 1, device);
        let (logits, weights) = on_compute_pool(device, || model.forward_with_attention(input));
        let [n, k] = logits.dims();
        let len = weights.dims()[1];
        let probs = blended(softmax(logits, 1), &refs, trained.blend.as_ref()).into_data().try_into_vec_as::<f32>().expect("f32 data");
        let weights = weights.into_data().try_into_vec_as::<f32>().expect("f32 data");
        for i in 0..n {
            let p = &probs[i * k..(i + 1) * k];
            let best = argmax(p);
            let tokens = &encoded[i].1;
            let mut attended: Vec<(String, f32)> = tokens.iter().enumerate().map(|(t, tok)| (tok.clone(), weights[i * len + t])).collect();
            attended.sort_by(|a, b| b.1.total_cmp(&a.1));
            attended.truncate(top_tokens);
            out.push(TextPrediction {
                text: chunk[i].clone(),
                label: trained.classes[best].clone(),
                probability: p[best],
                probabilities: trained.classes.iter().cloned().zip(p.iter().copied()).collect(),
                top_tokens: attended,
            });
        }
    }
    Ok(out)
}

/// The pooled feature vector of each text (see [`TextClassifier::features`]), in order.
pub fn text_features(trained: &TextRun, texts: &[String], device: &Device) -> Result<Vec<Vec<f32>>> {
    let model = trained.load(device)?;
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(256) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let ids = trained.tokenizer.encode_all(&refs)?;
        let ids: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let features = model.features(TokenInput::from_ids(&ids, trained.ngrams.as_deref(), trained.tokenizer.pad_id(), 1, device));
        let [n, d] = features.dims();
        let flat = features.into_data().try_into_vec_as::<f32>().expect("f32 data");
        out.extend((0..n).map(|i| flat[i * d..(i + 1) * d].to_vec()));
    }
    Ok(out)
}

/// Exports the run's weights; safetensors files carry the class names, architecture and
/// tokenizer settings (the tokenizer itself is the run's `tokenizer.json`, the n-gram
/// dictionary, if any, its `ngrams.txt`).
pub fn export(trained: &TextRun, format: WeightsFormat, out: &Path, device: &Device) -> Result<()> {
    let mut metadata = vec![
        ("architecture", trained.config.model.name.name().to_string()),
        ("classes", serde_json::to_string(&trained.classes)?),
        ("vocab_size", trained.tokenizer.vocab_size().to_string()),
        ("max_len", trained.config.data.tokenizer.max_len.to_string()),
        ("pad_id", trained.tokenizer.pad_id().to_string()),
    ];
    if trained.ngrams.is_some() {
        metadata.push((
            "ngram_dictionary",
            format!("{NGRAMS_FILE}: line k + 1 holds the token ids of ngrams.weight's row k (row 0: unseen n-grams, adds nothing)"),
        ));
    }
    export_weights(&trained.load(device)?, format, out, &metadata)
}
