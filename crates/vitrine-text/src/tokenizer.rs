//! The tokenizer: a Hugging Face WordPiece or BPE model trained on the training split, saved as
//! `tokenizer.json` in the run so evaluation and prediction cut text exactly as training did.

use std::path::Path;

use crate::config::{TokenizerConfig, TokenizerKind};
use anyhow::{Context, Result, anyhow, ensure};
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainerBuilder};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Tokenizer, TruncationParams};

/// The padding token, always id 0 in a trained vocabulary.
pub const PAD: &str = "[PAD]";
/// The token of anything outside the vocabulary.
pub const UNK: &str = "[UNK]";
/// Pad tokens other tokenizers use, tried in order when loading one.
const PAD_ALIASES: [&str; 3] = [PAD, "<pad>", "<|pad|>"];

/// A tokenizer with its padding id and the length texts are cut to.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    /// Add the tokenizer's own special tokens (a pretrained model's `[CLS]`/`[SEP]`).
    special_tokens: bool,
    max_len: usize,
}

impl TextTokenizer {
    /// Trains on `texts` (the training split only). Normalisation suits Chinese and English alike:
    /// every CJK character is its own word, other text is lower-cased (when configured) and split
    /// at whitespace and punctuation, then cut into WordPiece/BPE sub-words.
    pub fn train<S: AsRef<str> + Send>(texts: impl Iterator<Item = S> + Send, config: &TokenizerConfig) -> Result<Self> {
        let special = vec![AddedToken::from(PAD, true), AddedToken::from(UNK, true)];
        let (model, mut trainer): (tokenizers::ModelWrapper, TrainerWrapper) = match config.kind {
            TokenizerKind::Wordpiece => (
                WordPiece::default().into(),
                WordPieceTrainerBuilder::new()
                    .vocab_size(config.vocab_size)
                    .min_frequency(config.min_frequency)
                    .special_tokens(special)
                    .show_progress(false)
                    .build()
                    .into(),
            ),
            TokenizerKind::Bpe => (
                BPE::builder().unk_token(UNK.into()).build().map_err(|e| anyhow!("building BPE: {e}"))?.into(),
                BpeTrainerBuilder::new()
                    .vocab_size(config.vocab_size)
                    .min_frequency(config.min_frequency)
                    .special_tokens(special)
                    .show_progress(false)
                    .build()
                    .into(),
            ),
            TokenizerKind::Word => (
                WordLevel::builder().unk_token(UNK.into()).build().map_err(|e| anyhow!("building the word model: {e}"))?.into(),
                WordLevelTrainerBuilder::default()
                    .vocab_size(config.vocab_size)
                    .min_frequency(config.min_frequency)
                    .special_tokens(special)
                    .show_progress(false)
                    .build()
                    .map_err(|e| anyhow!("building the word trainer: {e}"))?
                    .into(),
            ),
        };
        let mut inner = Tokenizer::new(model);
        inner.with_normalizer(Some(BertNormalizer::new(true, true, None, config.lowercase))).with_pre_tokenizer(Some(BertPreTokenizer));
        inner.train(&mut trainer, texts).map_err(|e| anyhow!("training the tokenizer: {e}"))?;
        Self::wrap(inner, config.max_len).context("the trained tokenizer")
    }

    /// Loads a `tokenizer.json` (ours, or any Hugging Face one with a pad token).
    pub fn load(path: &Path, max_len: usize) -> Result<Self> {
        ensure!(path.is_file(), "tokenizer file {} does not exist", path.display());
        let inner = Tokenizer::from_file(path).map_err(|e| anyhow!("{}: not a Hugging Face tokenizer.json ({e})", path.display()))?;
        Self::wrap(inner, max_len).with_context(|| format!("{}", path.display()))
    }

    fn wrap(mut inner: Tokenizer, max_len: usize) -> Result<Self> {
        let pad_id =
            PAD_ALIASES.iter().find_map(|t| inner.token_to_id(t)).with_context(|| format!("the vocabulary has no padding token (one of {PAD_ALIASES:?})"))?;
        // A pretrained model's tokenizer frames each text (`[CLS] … [SEP]`): its own truncation
        // keeps the frame when a text is cut; ours have no frame and are cut below.
        let special_tokens = inner.get_post_processor().is_some();
        if special_tokens {
            let truncation = TruncationParams { max_length: max_len, ..Default::default() };
            inner.with_truncation(Some(truncation)).map_err(|e| anyhow!("setting truncation: {e}"))?;
        }
        Ok(Self { inner, pad_id, max_len, special_tokens })
    }

    /// Writes `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        vitrine_core::run_dir::save_atomic(path, |tmp| self.inner.save(tmp, true).map_err(|e| anyhow!("writing {}: {e}", path.display())))
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Vocabulary size, special tokens included: the size of the embedding table.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of each text, cut to `max_len`. A text with no tokens at all becomes one
    /// unknown token, so every sequence has something to attend to.
    pub fn encode_all(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        Ok(self.encode_tokens(texts)?.into_iter().map(|(ids, _)| ids).collect())
    }

    /// Token ids and token strings of each text, cut to `max_len`.
    pub fn encode_tokens(&self, texts: &[&str]) -> Result<Vec<(Vec<u32>, Vec<String>)>> {
        let encodings = self.inner.encode_batch(texts.to_vec(), self.special_tokens).map_err(|e| anyhow!("tokenizing: {e}"))?;
        let unk = self.inner.token_to_id(UNK).unwrap_or(self.pad_id);
        Ok(encodings
            .into_iter()
            .map(|e| {
                let n = e.get_ids().len().min(self.max_len);
                if n == 0 {
                    return (vec![unk], vec![UNK.to_string()]);
                }
                (e.get_ids()[..n].to_vec(), e.get_tokens()[..n].to_vec())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let mut texts = Vec::new();
        for _ in 0..20 {
            texts.push("质量很好，物流很快！".to_string());
            texts.push("The battery life is GREAT, delivery was fast.".to_string());
            texts.push("Screen broke after a week; terrible support.".to_string());
        }
        texts
    }

    #[test]
    fn trains_on_mixed_chinese_and_english_and_round_trips_through_json() {
        let config = TokenizerConfig { vocab_size: 200, min_frequency: 1, max_len: 6, ..Default::default() };
        let texts = corpus();
        let tokenizer = TextTokenizer::train(texts.iter(), &config).unwrap();
        assert_eq!(tokenizer.pad_id(), 0, "[PAD] is the first special token");
        let (ids, tokens) = tokenizer.encode_tokens(&["质量很好，Battery GREAT!"]).unwrap().remove(0);
        assert_eq!(tokens, ["质", "量", "很", "好", "，", "battery"], "CJK per character, English lower-cased, cut at max_len");
        assert_eq!(ids.len(), 6);
        let unk = tokenizer.encode_tokens(&["ж"]).unwrap().remove(0);
        assert_eq!(unk.1, [UNK]);
        assert_eq!(tokenizer.encode_all(&["   "]).unwrap()[0].len(), 1, "no empty sequences");

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("tokenizer.json");
        tokenizer.save(&path).unwrap();
        let loaded = TextTokenizer::load(&path, 6).unwrap();
        let sample = ["Delivery was fast, 物流很快", "terrible screen"];
        assert_eq!(loaded.encode_all(&sample).unwrap(), tokenizer.encode_all(&sample).unwrap());
        assert_eq!(loaded.vocab_size(), tokenizer.vocab_size());
    }

    #[test]
    fn word_vocabularies_are_the_same_every_time() {
        // Every count in this corpus ties: the word trainer orders such words by name.
        let config = TokenizerConfig { kind: TokenizerKind::Word, vocab_size: 200, min_frequency: 1, ..Default::default() };
        let vocab = || {
            let tokenizer = TextTokenizer::train(corpus().iter(), &config).unwrap();
            let mut v: Vec<(String, u32)> = tokenizer.inner.get_vocab(true).into_iter().collect();
            v.sort();
            (v, tokenizer.encode_tokens(&["Battery life was GREAT, 物流很快"]).unwrap())
        };
        let first = vocab();
        assert_eq!(first.1[0].1, ["battery", "life", "was", "great", ",", "物", "流", "很", "快"], "whole words, CJK per character");
        for _ in 0..3 {
            assert_eq!(vocab(), first);
        }
    }

    /// Hugging Face's trainer numbered the continuing subwords (`##x`) in hash-map order, and
    /// breaks ties between equally frequent merges by those numbers, so two trainings could learn
    /// different vocabularies; the workspace's patched `tokenizers` numbers them in word order.
    #[test]
    fn subword_vocabularies_are_the_same_every_time() {
        for kind in [TokenizerKind::Wordpiece, TokenizerKind::Bpe] {
            let config = TokenizerConfig { kind, vocab_size: 120, min_frequency: 1, ..Default::default() };
            let vocab = || {
                let tokenizer = TextTokenizer::train(corpus().iter(), &config).unwrap();
                let mut v: Vec<(String, u32)> = tokenizer.inner.get_vocab(true).into_iter().collect();
                v.sort();
                v
            };
            let first = vocab();
            for _ in 0..8 {
                assert_eq!(vocab(), first, "{kind:?}");
            }
        }
    }

    #[test]
    fn bpe_trains_too() {
        let config = TokenizerConfig { kind: TokenizerKind::Bpe, vocab_size: 150, min_frequency: 1, ..Default::default() };
        let tokenizer = TextTokenizer::train(corpus().iter(), &config).unwrap();
        let ids = tokenizer.encode_all(&["battery life"]).unwrap().remove(0);
        assert!(!ids.is_empty() && ids.iter().all(|&i| (i as usize) < tokenizer.vocab_size()));
    }

    #[test]
    fn loading_a_bad_file_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("tokenizer.json");
        std::fs::write(&path, "{ not json").unwrap();
        let err = format!("{:#}", TextTokenizer::load(&path, 8).err().unwrap());
        assert!(err.contains("tokenizer.json") && err.contains("not a Hugging Face"), "{err}");
        let missing = format!("{:#}", TextTokenizer::load(&tmp.path().join("nope.json"), 8).err().unwrap());
        assert!(missing.contains("does not exist"), "{missing}");
    }
}
