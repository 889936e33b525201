//! Reading interactions: string IDs mapped to indices once, ratings and times parsed, bad rows
//! named by file and line.

use std::collections::HashMap;

use anyhow::{Result, bail};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use vitrine_core::data::{SkippedRow, Table};

use crate::config::InteractionSource;

/// String IDs (customer codes, SKUs) and the indices the models use, in order of first sight.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    ids: Vec<String>,
    index: HashMap<String, u32>,
}

impl IdMap {
    pub fn from_ids(ids: Vec<String>) -> Self {
        let index = ids.iter().enumerate().map(|(i, id)| (id.clone(), i as u32)).collect();
        Self { ids, index }
    }

    /// The index of `id`, added when new.
    pub fn intern(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.ids.push(id.to_string());
        self.index.insert(id.to_string(), i);
        i
    }

    pub fn get(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    pub fn id(&self, index: u32) -> &str {
        &self.ids[index as usize]
    }

    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One interaction: who, what, when (seconds; 0 without a time column), and its line in the file,
/// which breaks ties in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interaction {
    pub user: u32,
    pub item: u32,
    pub time: i64,
    pub line: u64,
}

/// What reading interactions kept and dropped.
#[derive(Debug, Default)]
pub struct ReadInteractions {
    pub rows: Vec<Interaction>,
    pub skipped: Vec<SkippedRow>,
    /// Rows rated below `implicit_threshold`: not bad, just not positive feedback.
    pub below_threshold: usize,
}

/// Reads `source`, mapping IDs through `users` and `items`. With `known_items`, an item the item
/// file does not list is a bad row; so are a missing ID, a rating or time that does not parse,
/// and a row that repeats an earlier one exactly. Bad rows are skipped and returned, or fail the
/// read when `strict`.
pub fn read_interactions(
    source: &InteractionSource,
    users: &mut IdMap,
    items: &mut IdMap,
    known_items: bool,
    threshold: Option<f64>,
    limit: Option<usize>,
    strict: bool,
) -> Result<ReadInteractions> {
    let path = &source.file;
    let mut columns = vec![source.user.as_str(), source.item.as_str()];
    let rating_at = source.rating.as_ref().map(|c| {
        columns.push(c);
        columns.len() - 1
    });
    let time_at = source.timestamp.as_ref().map(|c| {
        columns.push(c);
        columns.len() - 1
    });
    let mut out = ReadInteractions::default();
    // Exact repeats: (customer, item, time, rating) of each row kept so far, and its line.
    let mut seen: HashMap<(u32, u32, i64, u64), u64> = HashMap::new();
    let bad = |line: u64, reason: String, out: &mut ReadInteractions| -> Result<()> {
        if strict {
            bail!("{}: line {line}: {reason}", path.display());
        }
        out.skipped.push(SkippedRow { path: path.clone(), line, reason });
        Ok(())
    };
    let mut taken = 0usize;
    Table::new(path)?.read(&columns, |row| {
        if limit.is_some_and(|l| taken >= l) {
            return Ok(());
        }
        taken += 1;
        let parsed = (|| -> Result<(&str, &str, i64, Option<f64>), String> {
            let user = row.text(0, &source.user)?;
            let item = row.text(1, &source.item)?;
            let rating = match rating_at {
                Some(at) => {
                    let raw = row.text(at, columns[at])?;
                    Some(raw.parse::<f64>().map_err(|_| format!("`{}` is `{raw}`, not a number", columns[at]))?)
                }
                None => None,
            };
            let time = match time_at {
                Some(at) => parse_time(row.text(at, columns[at])?).map_err(|e| format!("`{}`: {e}", columns[at]))?,
                None => 0,
            };
            if known_items && items.get(item).is_none() {
                return Err(format!("item `{item}` is not in the item file"));
            }
            Ok((user, item, time, rating))
        })();
        match parsed {
            Err(reason) => bad(row.line, reason, &mut out)?,
            Ok((_, _, _, Some(rating))) if threshold.is_some_and(|t| rating < t) => out.below_threshold += 1,
            Ok((user, item, time, rating)) => {
                let (user, item) = (users.intern(user), items.intern(item));
                match seen.entry((user, item, time, rating.unwrap_or_default().to_bits())) {
                    std::collections::hash_map::Entry::Occupied(first) => bad(row.line, format!("repeats line {} exactly", first.get()), &mut out)?,
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(row.line);
                        out.rows.push(Interaction { user, item, time, line: row.line });
                    }
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Seconds since 1970 from unix seconds (`881250949`, `881250949.5`) or an ISO-8601 date or
/// date-time (`2024-05-01`, `2024-05-01 14:03:00`, `2024-05-01T14:03:00Z`, with an offset).
pub fn parse_time(raw: &str) -> Result<i64, String> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<i64>() {
        return Ok(seconds);
    }
    if let Ok(seconds) = raw.parse::<f64>().map(|s| s.floor())
        && seconds.is_finite()
    {
        return Ok(seconds as i64);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.timestamp());
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(t.and_utc().timestamp());
        }
    }
    for format in ["%Y-%m-%d", "%Y/%m/%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(raw, format) {
            return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp());
        }
    }
    Err(format!("`{raw}` is neither unix seconds nor an ISO-8601 date such as 2024-05-01 or 2024-05-01 14:03:00"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_unix_seconds_or_iso_dates() {
        assert_eq!(parse_time("881250949"), Ok(881_250_949));
        assert_eq!(parse_time("881250949.7"), Ok(881_250_949));
        assert_eq!(parse_time("1970-01-02"), Ok(86_400));
        assert_eq!(parse_time("1970-01-02 00:01:05"), Ok(86_465));
        assert_eq!(parse_time("1970-01-02T00:01:05Z"), Ok(86_465));
        assert_eq!(parse_time("1970-01-02T02:01:05+02:00"), Ok(86_465));
        assert!(parse_time("yesterday").unwrap_err().contains("ISO-8601"));
    }
}
