//! Matching the class names found in data (image sub-folders, text labels) to a run's classes:
//! exactly, then through a class map, then ignoring case and the difference between spaces,
//! hyphens, underscores and slashes (`t-shirt top` is `T-shirt/top`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::config::ClassMapSetting;

/// Names in the data mapped to class names of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassMap {
    entries: BTreeMap<String, String>,
    /// Where the map came from, for error messages.
    origin: String,
}

impl ClassMap {
    /// Reads a TOML class map; a value that is not a string is an error naming its line.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading class map {}", path.display()))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map(|s| text[..s.start].lines().count().max(1)).unwrap_or(1);
            anyhow::anyhow!("{}: line {line}: {}", path.display(), e.message())
        })?;
        let mut entries = BTreeMap::new();
        for (key, value) in table {
            let Some(class) = value.as_str() else {
                let line = text.lines().position(|l| l.contains(key.as_str())).map_or(1, |i| i + 1);
                bail!("{}: line {line}: `{key}` must map to a class name in quotes, e.g. \"{key}\" = \"Class\"", path.display());
            };
            entries.insert(key, class.to_string());
        }
        Ok(Self { entries, origin: path.display().to_string() })
    }

    /// The map a config or command line names (none: an empty map).
    pub fn from_setting(setting: Option<&ClassMapSetting>) -> Result<Self> {
        match setting {
            None => Ok(Self::default()),
            Some(ClassMapSetting::File(path)) => Self::read(path).context("data.class_map"),
            Some(ClassMapSetting::Inline(entries)) => Ok(Self { entries: entries.clone(), origin: "data.class_map".into() }),
        }
    }

    /// The data's name for `class` (the first map entry naming it), for showing predictions in the
    /// user's own names.
    pub fn name_of<'a>(&'a self, class: &'a str) -> &'a str {
        self.entries.iter().find(|(_, c)| c.as_str() == class).map_or(class, |(name, _)| name.as_str())
    }
}

/// A class name with case and separators folded: `T-shirt/top` → `t shirt top`.
fn fold(name: &str) -> String {
    name.split(|c: char| c.is_whitespace() || matches!(c, '-' | '_' | '/')).filter(|part| !part.is_empty()).map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// A run's classes, with the map that names them in the data at hand.
#[derive(Debug, Clone)]
pub struct ClassMatcher {
    classes: Vec<String>,
    map: ClassMap,
}

impl ClassMatcher {
    /// Every map value must name one of `classes`.
    pub fn new(classes: &[String], map: &ClassMap) -> Result<Self> {
        let mut matcher = Self::exact(classes);
        for (name, class) in &map.entries {
            if let Err(reason) = matcher.find(class) {
                bail!("{}: \"{name}\" = \"{class}\": {reason}", map.origin);
            }
        }
        matcher.map = map.clone();
        Ok(matcher)
    }

    /// Classes matched exactly, with no map.
    pub fn exact(classes: &[String]) -> Self {
        Self { classes: classes.to_vec(), map: ClassMap::default() }
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The class index of `name`, or why there is none (naming the nearest class).
    pub fn find(&self, name: &str) -> Result<usize, String> {
        if let Some(i) = self.classes.iter().position(|c| c == name) {
            return Ok(i);
        }
        let mapped = self.map.entries.get(name).or_else(|| self.map.entries.iter().find(|(k, _)| fold(k) == fold(name)).map(|(_, v)| v));
        let wanted = mapped.map_or(name, String::as_str);
        if let Some(i) = self.classes.iter().position(|c| c == wanted) {
            return Ok(i);
        }
        let folded = fold(wanted);
        let matches: Vec<usize> = (0..self.classes.len()).filter(|&i| fold(&self.classes[i]) == folded).collect();
        match matches[..] {
            [i] => Ok(i),
            [] => {
                let nearest = self.nearest(name);
                Err(format!(
                    "\"{name}\" is none of the classes {:?}; nearest is \"{nearest}\" (map it with --class-map FILE or data.class_map: \"{name}\" = \"{nearest}\")",
                    self.classes
                ))
            }
            _ => Err(format!(
                "\"{name}\" could be any of {:?}; name one with --class-map FILE or data.class_map",
                matches.iter().map(|&i| &self.classes[i]).collect::<Vec<_>>()
            )),
        }
    }

    /// The class whose folded name is closest to `name`'s.
    pub fn nearest(&self, name: &str) -> &str {
        let folded = fold(name);
        self.classes
            .iter()
            .max_by(|a, b| strsim::jaro_winkler(&fold(a), &folded).total_cmp(&strsim::jaro_winkler(&fold(b), &folded)))
            .map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fashion() -> Vec<String> {
        ["T-shirt/top", "Trouser", "Pullover", "Ankle boot", "Bag"].map(String::from).to_vec()
    }

    #[test]
    fn folder_names_match_ignoring_case_and_separators() {
        let m = ClassMatcher::exact(&fashion());
        assert_eq!(m.find("Bag"), Ok(4));
        assert_eq!(m.find("bag"), Ok(4));
        assert_eq!(m.find("ankle-boot"), Ok(3));
        assert_eq!(m.find("ANKLE_BOOT"), Ok(3));
        assert_eq!(m.find("t-shirt top"), Ok(0));
        assert_eq!(m.find("t-shirt_top"), Ok(0));
        let err = m.find("tshirt").unwrap_err();
        assert!(err.contains("nearest is \"T-shirt/top\""), "{err}");
        assert!(m.find("sandal").is_err());
    }

    #[test]
    fn a_class_map_names_what_folding_cannot() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("map.toml");
        std::fs::write(&path, "# mine\n\"t-shirt\" = \"T-shirt/top\"\nboots = \"ankle boot\"\n").unwrap();
        let map = ClassMap::read(&path).unwrap();
        let m = ClassMatcher::new(&fashion(), &map).unwrap();
        assert_eq!(m.find("t-shirt"), Ok(0));
        assert_eq!(m.find("T-Shirt"), Ok(0), "map keys are folded too");
        assert_eq!(m.find("boots"), Ok(3), "map values are folded");
        assert_eq!(map.name_of("T-shirt/top"), "t-shirt");
        assert_eq!(map.name_of("Bag"), "Bag");

        std::fs::write(&path, "\"t-shirt\" = \"Tee\"\n").unwrap();
        let err = ClassMatcher::new(&fashion(), &ClassMap::read(&path).unwrap()).unwrap_err().to_string();
        assert!(err.contains("map.toml") && err.contains("\"Tee\"") && err.contains("nearest"), "{err}");
        std::fs::write(&path, "a = \"Bag\"\nb = 3\n").unwrap();
        let err = ClassMap::read(&path).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("`b`"), "{err}");
        std::fs::write(&path, "a = \"Bag\"\nb = \n").unwrap();
        let err = ClassMap::read(&path).unwrap_err().to_string();
        assert!(err.contains("map.toml: line 2"), "{err}");
    }
}
