//! Training a review-sentiment classifier: what this family does its own way in the shared
//! recipe (the tokenizer and the kept split).

use std::sync::Arc;

use anyhow::{Context, Result};
use burn::prelude::*;
use vitrine_core::classifier::ClassifierTask;
use vitrine_core::config::Settings;
use vitrine_core::plot::confusion_png;
use vitrine_core::report::{DataSummary, RunReport};
use vitrine_core::train::{Batches, Built, FitOutcome, HeldOut, Recipe, TrainContext, build_optimizer, recipe};

use crate::baseline::{BASELINE, BASELINE_FILE, ClassicalBaseline};
use crate::config::{Architecture, TASK, TextConfig};
use crate::data::{MAX_NGRAMS, NGRAMS_FILE, NgramDictionary, SPLIT_FILES, TextData, TokenBatch, TokenBatches, TokenizedSet, load_data, tokenize};
use crate::inference::score_texts;
use crate::model::TextClassifier;
use crate::tokenizer::TextTokenizer;

/// Below this many training texts the recurrent and Transformer networks rarely beat `text-ngram`.
const SMALL_FOR_NETWORKS: usize = 10_000;

/// The file a run keeps its tokenizer in.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Trains the configured model into `ctx.run`, continuing from its last checkpoint when resuming.
pub fn train(config: &TextConfig, ctx: &TrainContext) -> Result<RunReport> {
    recipe::train(&TextRecipe { config }, ctx)
}

/// The tokenizer of a run: the configured file, or one trained on the training texts.
fn tokenizer_for(config: &TextConfig, train: &crate::data::TextSet) -> Result<TextTokenizer> {
    let t = &config.data.tokenizer;
    match &t.path {
        Some(path) => TextTokenizer::load(path, t.max_len).context("data.tokenizer.path"),
        None => TextTokenizer::train(train.examples.iter().map(|e| e.text.as_str()), t),
    }
}

/// The texts of a run and, once prepared, its tokenizer and token ids.
struct TextTraining {
    texts: TextData,
    tokens: Option<Tokens>,
}

struct Tokens {
    tokenizer: TextTokenizer,
    /// The training split's n-grams, for a model that embeds them from a dictionary.
    ngrams: Option<Arc<NgramDictionary>>,
    train: Arc<TokenizedSet>,
    valid: Arc<TokenizedSet>,
    test: Arc<TokenizedSet>,
}

impl TextTraining {
    fn tokens(&self) -> &Tokens {
        self.tokens.as_ref().expect("the recipe prepares the data before using it")
    }
}

/// The n-gram dictionary of a new run, built from its training split and kept in the run; a
/// resumed run's own.
fn ngram_dictionary(config: &TextConfig, train: &TokenizedSet, ctx: &TrainContext) -> Result<NgramDictionary> {
    let (order, min_count, path) = (config.model.ngram_order, config.model.ngram_min_count, ctx.run.file(NGRAMS_FILE));
    if ctx.resuming {
        return NgramDictionary::load(&path, order);
    }
    let dictionary = NgramDictionary::build(&train.ids, order, min_count);
    dictionary.save(&path)?;
    let capped = if dictionary.rows() > MAX_NGRAMS { format!(" (the {MAX_NGRAMS} most frequent)") } else { String::new() };
    ctx.reporter.info(&format!(
        "n-grams: {} distinct runs of 2–{order} tokens seen at least {min_count} time(s) in training{capped}, each with its own embedding ({NGRAMS_FILE})",
        dictionary.rows() - 1
    ));
    Ok(dictionary)
}

struct TextRecipe<'a> {
    config: &'a TextConfig,
}

impl Recipe for TextRecipe<'_> {
    type Data = TextTraining;
    type Task = ClassifierTask<TextClassifier, TokenBatch>;

    fn task_name(&self) -> &'static str {
        TASK
    }

    fn settings(&self) -> &dyn Settings {
        self.config
    }

    fn load_data(&self, ctx: &TrainContext) -> Result<TextTraining> {
        Ok(TextTraining { texts: load_data(self.config, ctx.reporter)?, tokens: None })
    }

    fn classes(&self, data: &TextTraining) -> Vec<String> {
        data.texts.classes.clone()
    }

    /// A new run trains (or loads) its tokenizer and keeps it with its split; a resumed run
    /// reads its own tokenizer back.
    fn prepare(&self, data: &mut TextTraining, ctx: &TrainContext) -> Result<()> {
        let (config, run, texts) = (self.config, ctx.run, &data.texts);
        let tokenizer = if ctx.resuming {
            TextTokenizer::load(&run.file(TOKENIZER_FILE), config.data.tokenizer.max_len)?
        } else {
            let tokenizer = tokenizer_for(config, &texts.train)?;
            tokenizer.save(&run.file(TOKENIZER_FILE))?;
            let (text_key, label_key) = (&config.data.train.text_column, &config.data.train.label_column);
            for (set, file) in [(&texts.train, SPLIT_FILES[0]), (&texts.valid, SPLIT_FILES[1]), (&texts.test, SPLIT_FILES[2])] {
                run.write(file, set.to_jsonl(text_key, label_key))?;
            }
            tokenizer
        };
        let train = Arc::new(tokenize(&tokenizer, &texts.train)?);
        let mean_len = train.ids.iter().map(Vec::len).sum::<usize>() as f64 / train.len() as f64;
        ctx.reporter.info(&format!(
            "data: {} train / {} valid / {} test texts, {} classes {:?}; vocabulary {}, {mean_len:.1} tokens per text (max {})",
            texts.train.len(),
            texts.valid.len(),
            texts.test.len(),
            texts.classes.len(),
            texts.classes,
            tokenizer.vocab_size(),
            config.data.tokenizer.max_len
        ));
        // A pretrained encoder is meant for small sets; networks learning from scratch are not.
        if !matches!(config.model.name, Architecture::Ngram | Architecture::Bert) && texts.train.len() < SMALL_FOR_NETWORKS {
            ctx.reporter.warn(&format!(
                "{} training texts is a small set for {}: below ~{SMALL_FOR_NETWORKS} texts `text-ngram` (model.name = \"text-ngram\") or the classical baseline in the report usually does better",
                texts.train.len(),
                config.model.name.name()
            ));
        }
        let ngrams = config.model.ngram_dictionary().then(|| ngram_dictionary(config, &train, ctx)).transpose()?.map(Arc::new);
        let (valid, test) = (Arc::new(tokenize(&tokenizer, &texts.valid)?), Arc::new(tokenize(&tokenizer, &texts.test)?));
        data.tokens = Some(Tokens { tokenizer, ngrams, train, valid, test });
        Ok(())
    }

    fn build(&self, data: &TextTraining, train_device: &Device, ctx: &TrainContext) -> Result<Built<Self::Task>> {
        let (config, classes) = (self.config, &data.texts.classes);
        let (vocab, ngram_rows) = (data.tokens().tokenizer.vocab_size(), data.tokens().ngrams.as_ref().map_or(0, |d| d.rows()));
        let model = TextClassifier::new(&config.model, vocab, ngram_rows, config.data.tokenizer.max_len, classes.len(), train_device)?;
        // A resumed run's checkpoint replaces every weight: the pretrained encoder is read only for a new run.
        let model = if ctx.resuming { model } else { model.load_pretrained(&config.model, train_device)? };
        let parameters = model.num_params();
        let optimizer = build_optimizer(&config.train.optimizer, config.train.grad_clip_norm);
        Ok(Built { task: ClassifierTask::new(model, optimizer, train_device), description: config.model.name.name().into(), parameters })
    }

    fn batches(&self, data: &TextTraining, train_device: &Device, device: &Device) -> Result<(Batches<TokenBatch>, Batches<TokenBatch>)> {
        let (tokens, bs, seed) = (data.tokens(), self.config.train.batch_size, self.config.run.seed);
        let pad = tokens.tokenizer.pad_id();
        let train = TokenBatches::shuffled(tokens.train.clone(), bs, seed, pad, train_device.clone()).with_ngrams(tokens.ngrams.clone());
        let valid = TokenBatches::ordered(tokens.valid.clone(), bs, pad, device.clone()).with_ngrams(tokens.ngrams.clone());
        Ok((Box::new(train), Box::new(valid)))
    }

    fn evaluate(&self, task: &Self::Task, data: &TextTraining, _outcome: &FitOutcome, ctx: &TrainContext) -> Result<HeldOut> {
        let (tokens, texts, classes) = (data.tokens(), &data.texts, &data.texts.classes);
        let ((train, train_labels), (test, test_labels)) = (texts.train.texts_and_labels(), texts.test.texts_and_labels());
        let baseline = ClassicalBaseline::fit(&train, &train_labels, classes.len())?;
        let blend = self.config.model.blend_baseline.then_some(&baseline);
        if blend.is_some() {
            baseline.save(&ctx.run.file(BASELINE_FILE))?;
        }
        let model = task.model().valid();
        let batches = TokenBatches::ordered(tokens.test.clone(), self.config.train.batch_size, tokens.tokenizer.pad_id(), ctx.compute.device.clone());
        let scores = score_texts(&model, batches.with_ngrams(tokens.ngrams.clone()), &test, blend, classes);
        confusion_png(&ctx.run.file("confusion.png"), &scores.confusion, classes)?;
        ctx.reporter.info(&format!(
            "test: accuracy {:.2}%, macro-F1 {:.4}{}",
            100.0 * scores.accuracy,
            scores.macro_f1,
            scores.auroc.map(|a| format!(", AUROC {a:.4}")).unwrap_or_default()
        ));
        let baseline = baseline.accuracy(&test, &test_labels);
        ctx.reporter.info(&format!("test: accuracy {:.2}% for the classical baseline on the same split ({BASELINE})", 100.0 * baseline));
        Ok(HeldOut { test: Some(scores), figures: vec![(format!("test accuracy, {BASELINE} (same split)"), baseline)], ..HeldOut::default() })
    }

    fn data_summary(&self, data: &TextTraining) -> DataSummary {
        let t = &data.texts;
        DataSummary { train: t.train.len(), valid: t.valid.len(), test: Some(t.test.len()), classes: t.classes.clone(), skipped: t.notes.clone() }
    }
}
