//! `--set key=value` overrides and family defaults applied to a config's TOML table, and
//! serde's errors explained with the nearest valid key.

use anyhow::{Context, Result, bail};

/// Sets `a.b.c=value` only where the table has no value yet.
pub(super) fn apply_default(table: &mut toml::Table, item: &str) -> Result<()> {
    let key = item.split_once('=').map_or(item, |(k, _)| k.trim());
    let mut node = &*table;
    for part in key.split('.') {
        match node.get(part) {
            Some(toml::Value::Table(inner)) => node = inner,
            Some(_) => return Ok(()), // the file sets it
            None => return apply_override(table, item),
        }
    }
    Ok(())
}

/// Applies one `a.b.c=value` override. The value is read as TOML (`3`, `1e-4`, `true`,
/// `[1, 2]`), and as a plain string when it is not valid TOML.
pub(super) fn apply_override(table: &mut toml::Table, item: &str) -> Result<()> {
    let (key, raw) = item.split_once('=').with_context(|| format!("--set {item}: expected key=value"))?;
    let key = key.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("--set {item}: `{key}` is not a valid key");
    }
    let mut node = table;
    for part in &parts[..parts.len() - 1] {
        let entry = node.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().with_context(|| format!("--set {item}: `{part}` is a value, not a section"))?;
    }
    node.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Adds "did you mean" to serde's unknown-field errors.
pub(super) fn explain_toml_error(err: toml::de::Error) -> anyhow::Error {
    let text = err.to_string();
    match nearest_key_hint(&text) {
        Some(hint) => anyhow::anyhow!("{}\n{hint}", text.trim_end()),
        None => anyhow::anyhow!("{}", text.trim_end()),
    }
}

/// From serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"), the
/// valid name closest to `x`.
fn nearest_key_hint(message: &str) -> Option<String> {
    let (what, rest) =
        [("key", "unknown field `"), ("value", "unknown variant `")].into_iter().find_map(|(what, marker)| Some((what, message.split(marker).nth(1)?)))?;
    let (unknown, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = candidates.iter().map(|c| (strsim::levenshtein(unknown, c), *c)).min()?;
    Some(format!("unknown {what} `{unknown}`: did you mean `{}`?", best.1))
}
