//! Item and customer features: categories, multi-valued categories, numbers and words read from
//! a file keyed by ID, turned into token indices (for embedding bags) and standardised numbers.

use std::collections::HashMap;

use anyhow::{Result, bail};
use burn::prelude::*;
use vitrine_core::data::{SkippedRow, Table};

use super::interactions::IdMap;
use crate::config::FeatureSource;

/// The features of every entity (item or customer), by entity index.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// Feature tokens (`genre=Comedy`, `title:toy`) in the order first seen.
    pub vocabulary: Vec<String>,
    /// Each entity's token indices.
    pub tokens: Vec<Vec<u32>>,
    /// Each entity's standardised numbers (one per numeric column).
    pub numbers: Vec<Vec<f32>>,
    pub numeric_columns: Vec<String>,
    /// Each entity's display name, when the file has a name column.
    pub names: Option<Vec<String>>,
}

/// What reading a feature file found.
pub struct ReadFeatures {
    pub features: Features,
    pub skipped: Vec<SkippedRow>,
}

/// Reads `source`, interning every ID it lists into `ids` (so items nobody has bought yet exist
/// too), then `finish` sizes the tables to every ID known at the end.
pub fn read_features(source: &FeatureSource, ids: &mut IdMap, strict: bool) -> Result<ReadFeatures> {
    let path = &source.file;
    let mut columns: Vec<&str> = vec![&source.id];
    let name_at = source.name.as_ref().map(|c| {
        columns.push(c);
        columns.len() - 1
    });
    let first_categorical = columns.len();
    columns.extend(source.categorical.iter().map(String::as_str));
    let first_multi = columns.len();
    let multi: Vec<(&str, &str)> = source.multi.iter().map(|(c, sep)| (c.as_str(), sep.as_str())).collect();
    columns.extend(multi.iter().map(|(c, _)| *c));
    let first_numeric = columns.len();
    columns.extend(source.numeric.iter().map(String::as_str));
    let first_text = columns.len();
    columns.extend(source.text.iter().map(String::as_str));
    // (is a text run, the column it reads): text runs first, then image runs.
    let run_columns: Vec<(bool, &crate::config::RunColumn)> =
        source.text_run.iter().map(|r| (true, r)).chain(source.image_run.iter().map(|r| (false, r))).collect();
    let first_run = columns.len();
    columns.extend(run_columns.iter().map(|(_, r)| r.column.as_str()));
    // Per run column: (entity, value) of the rows that have one.
    let mut run_values: Vec<Vec<(u32, String)>> = vec![Vec::new(); run_columns.len()];

    let mut vocabulary: Vec<String> = Vec::new();
    let mut token_index: HashMap<String, u32> = HashMap::new();
    let mut intern = |token: String| -> u32 {
        *token_index.entry(token.clone()).or_insert_with(|| {
            vocabulary.push(token);
            vocabulary.len() as u32 - 1
        })
    };
    let mut tokens: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut raw_numbers: HashMap<u32, Vec<Option<f64>>> = HashMap::new();
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut skipped = Vec::new();
    let mut seen_at: HashMap<String, u64> = HashMap::new();
    Table::new(path)?.read(&columns, |row| {
        let id = match row.text(0, &source.id) {
            Ok(id) => id.to_string(),
            Err(reason) => return skip(&mut skipped, strict, path, row.line, reason),
        };
        if let Some(first) = seen_at.get(&id) {
            return skip(&mut skipped, strict, path, row.line, format!("`{id}` was already listed on line {first}"));
        }
        seen_at.insert(id.clone(), row.line);
        let index = ids.intern(&id);
        let field = |i: usize| row.fields[i].as_deref().map(str::trim).unwrap_or("");
        let mut own = Vec::new();
        for (i, column) in source.categorical.iter().enumerate() {
            let value = field(first_categorical + i);
            if !value.is_empty() {
                own.push(intern(format!("{column}={value}")));
            }
        }
        for (i, (column, separator)) in multi.iter().enumerate() {
            for value in field(first_multi + i).split(separator).map(str::trim).filter(|v| !v.is_empty()) {
                own.push(intern(format!("{column}={value}")));
            }
        }
        for (i, column) in source.text.iter().enumerate() {
            for word in field(first_text + i).split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                own.push(intern(format!("{column}:{}", word.to_lowercase())));
            }
        }
        own.sort_unstable();
        own.dedup();
        tokens.insert(index, own);
        let mut numbers = Vec::new();
        for (i, column) in source.numeric.iter().enumerate() {
            let value = field(first_numeric + i);
            if value.is_empty() {
                numbers.push(None);
                continue;
            }
            match value.parse::<f64>() {
                Ok(v) if v.is_finite() => numbers.push(Some(v)),
                _ => return skip(&mut skipped, strict, path, row.line, format!("`{column}` is `{value}`, not a number")),
            }
        }
        raw_numbers.insert(index, numbers);
        if let Some(at) = name_at {
            names.insert(index, field(at).to_string());
        }
        for (r, values) in run_values.iter_mut().enumerate() {
            let value = field(first_run + r);
            if !value.is_empty() {
                values.push((index, value.to_string()));
            }
        }
        Ok(())
    })?;
    if tokens.is_empty() {
        bail!("{}: no usable rows", path.display());
    }
    // What trained runs read in their columns, as further numeric columns.
    let mut numeric_columns = source.numeric.clone();
    for ((is_text, r), values) in run_columns.iter().zip(run_values) {
        let vectors = if *is_text {
            super::run_features::texts(&r.run, &values)?
        } else {
            super::run_features::images(&r.run, &values, path.parent().unwrap_or(std::path::Path::new(".")))?
        };
        let width = vectors.first().map_or(0, |(_, v)| v.len());
        for (index, vector) in vectors {
            raw_numbers.entry(index).or_insert_with(|| vec![None; source.numeric.len()]).resize(numeric_columns.len(), None);
            raw_numbers.get_mut(&index).expect("inserted").extend(vector.into_iter().map(|v| Some(v as f64)));
        }
        numeric_columns.extend((0..width).map(|d| format!("{}:{d}", r.column)));
    }
    let n = ids.len();
    let columns_n = numeric_columns.len();
    // Standardise each numeric column over the rows that have it; a missing value is the mean (0).
    let mut numbers = vec![vec![0.0f32; columns_n]; n];
    for c in 0..columns_n {
        let values: Vec<f64> = raw_numbers.values().filter_map(|v| v.get(c).copied().flatten()).collect();
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len().max(1) as f64).sqrt().max(1e-9);
        for (&index, row) in &raw_numbers {
            if let Some(Some(v)) = row.get(c) {
                numbers[index as usize][c] = ((v - mean) / std) as f32;
            }
        }
    }
    let mut all_tokens = vec![Vec::new(); n];
    for (index, own) in tokens {
        all_tokens[index as usize] = own;
    }
    let names = source.name.as_ref().map(|_| (0..n as u32).map(|i| names.remove(&i).unwrap_or_default()).collect());
    Ok(ReadFeatures { features: Features { vocabulary, tokens: all_tokens, numbers, numeric_columns, names }, skipped })
}

fn skip(skipped: &mut Vec<SkippedRow>, strict: bool, path: &std::path::Path, line: u64, reason: String) -> Result<()> {
    if strict {
        bail!("{}: line {line}: {reason}", path.display());
    }
    skipped.push(SkippedRow { path: path.to_path_buf(), line, reason });
    Ok(())
}

impl Features {
    /// Grows the tables to `n` entities (those first seen after the file, with no features).
    pub fn extend_to(&mut self, n: usize) {
        let width = self.numeric_columns.len();
        self.tokens.resize(n, Vec::new());
        self.numbers.resize(n, vec![0.0; width]);
        if let Some(names) = &mut self.names {
            names.resize(n, String::new());
        }
    }

    /// Whether entity `i` has any feature at all.
    pub fn has_any(&self, i: usize) -> bool {
        !self.tokens[i].is_empty() || self.numbers[i].iter().any(|&v| v != 0.0)
    }

    /// The tables as device tensors: token ids `[n, width]` padded with `vocabulary.len()` (an
    /// extra, always-zero row of the embedding table), their mask `[n, width]`, and the numbers
    /// `[n, numeric columns]`.
    pub fn tensors(&self, device: &Device) -> FeatureTensors {
        let n = self.tokens.len();
        let width = self.tokens.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let pad = self.vocabulary.len() as i64;
        let mut ids = Vec::with_capacity(n * width);
        let mut mask = Vec::with_capacity(n * width);
        for own in &self.tokens {
            ids.extend(own.iter().map(|&t| t as i64));
            ids.extend(std::iter::repeat_n(pad, width - own.len()));
            mask.extend(std::iter::repeat_n(1.0f32, own.len()));
            mask.extend(std::iter::repeat_n(0.0f32, width - own.len()));
        }
        let columns = self.numeric_columns.len();
        let numbers: Vec<f32> = self.numbers.iter().flatten().copied().collect();
        FeatureTensors {
            ids: Tensor::from_data(TensorData::new(ids, [n, width]), device),
            mask: Tensor::from_data(TensorData::new(mask, [n, width]), device),
            numbers: (columns > 0).then(|| Tensor::from_data(TensorData::new(numbers, [n, columns]), device)),
        }
    }
}

/// [`Features`] on a device.
#[derive(Debug, Clone)]
pub struct FeatureTensors {
    pub ids: Tensor<2, Int>,
    pub mask: Tensor<2>,
    pub numbers: Option<Tensor<2>>,
}
