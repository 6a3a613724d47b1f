//! Phase 2: [`Raw`] tree -> validated [`Config`], reporting every problem.
//!
//! Each section has its own file. All of them read objects through [`Fields`], which remembers
//! the keys a validator asked for and reports every other key as unknown, so the list of known
//! keys can never drift from what is actually read.

mod grant;
mod iris;
mod provider;

use crate::diagnostic::{Diags, Path, quote};
use crate::raw::Raw;
use crate::types::{Config, IrisSettings};

pub(crate) use grant::cap_from_raw;
pub use grant::{ModelPatternError, compile_model_pattern};

/// Top-level sections Aperture has and iris does not act on yet: accepted, with a warning.
const IGNORED_SECTIONS: [&str; 6] = ["quotas", "hooks", "exporters", "mcp", "connectors", "flags"];

/// Validates the whole tree. Returns `None` only when the root is not an object; otherwise a
/// config built from everything that was valid (callers must still check `d` for errors).
pub(crate) fn validate(root: &Raw, d: &mut Diags) -> Option<Config> {
    let entries = object(root, &Path::root(), d)?;
    let mut top = Fields::new(entries, &Path::root());

    let providers = match top.get("providers") {
        Some((raw, path)) => provider::providers(raw, &path, d),
        None => {
            d.error(&top.path_of("providers"), "missing required section");
            Vec::new()
        }
    };

    let mut grants = grant::Collected::default();
    let errors_before_grants = d.error_count();
    if let Some((raw, path)) = top.get("grants") {
        grant::grants(raw, &path, &mut grants, d);
    }
    if let Some((raw, path)) = top.get("temp_grants") {
        grant::temp_grants(raw, &path, &providers, &mut grants, d);
    }
    let grant_errors = d.error_count() > errors_before_grants;

    for section in IGNORED_SECTIONS {
        if let Some((raw, path)) = top.get(section)
            && object(raw, &path, d).is_some_and(|o| !o.is_empty())
        {
            d.warn(
                &path,
                format!("iris ignores the {} section for now", quote(section)),
            );
        }
    }
    let mut database = crate::types::DatabaseSettings::default();
    if let Some((raw, path)) = top.get("database")
        && let Some(entries) = object(raw, &path, d)
    {
        let mut df = Fields::new(entries, &path);
        if let Some((raw, path)) = df.get("retention")
            && let Some(entries) = object(raw, &path, d)
        {
            let mut rf = Fields::new(entries, &path);
            if let Some((raw, p)) = rf.get("duration")
                && let Some(s) = string(raw, &p, d)
            {
                if let Err(e) = check_retention(s) {
                    d.error(&p, e);
                } else {
                    database.retention_duration = s.to_owned();
                }
            }
            if let Some((raw, p)) = rf.get("purge")
                && let Some(items) = array(raw, &p, d)
            {
                for (i, it) in items.iter().enumerate() {
                    if let Some(s) = string(it, &p.index(i), d) {
                        if s == "captures" || s == "tools" {
                            database.purge.push(s.to_owned());
                        } else {
                            d.error(
                                &p.index(i),
                                format!("must be \"captures\" or \"tools\", not {s:?}"),
                            );
                        }
                    }
                }
            }
            rf.get("require_export");
            rf.finish(d);
        }
        df.finish(d);
    }
    if database.purge.is_empty() {
        database.purge.push("captures".into());
    }
    let mut auto_cost_basis = true;
    if let Some((raw, path)) = top.get("auto_cost_basis")
        && let Some(b) = boolean(raw, &path, d)
    {
        auto_cost_basis = b;
    }

    let iris = match top.get("iris") {
        Some((raw, path)) => iris::iris(raw, &path, d),
        None => IrisSettings::default(),
    };
    top.finish(d);

    grant::structural_checks(&providers, &grants, grant_errors, d);

    Some(Config {
        providers,
        grants: grants.grants,
        iris,
        database,
        auto_cost_basis,
    })
}

/// Reads the keys of one object; see the module docs.
pub(crate) struct Fields<'r> {
    entries: &'r [(String, Raw)],
    path: Path,
    used: Vec<bool>,
    known: Vec<&'static str>,
}

impl<'r> Fields<'r> {
    pub(crate) fn new(entries: &'r [(String, Raw)], path: &Path) -> Fields<'r> {
        Fields {
            entries,
            path: path.clone(),
            used: vec![false; entries.len()],
            known: Vec::new(),
        }
    }

    /// The value of `key` and its path; marks the key as known. `null` counts as absent.
    pub(crate) fn get(&mut self, key: &'static str) -> Option<(&'r Raw, Path)> {
        self.known.push(key);
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        self.used[i] = true;
        match &self.entries[i].1 {
            Raw::Null => None,
            value => Some((value, self.path.key(key))),
        }
    }

    /// Marks keys as known without reading them (accepted for compatibility, ignored).
    pub(crate) fn accept(&mut self, keys: &[&'static str]) {
        for key in keys {
            self.get(key);
        }
    }

    pub(crate) fn path_of(&self, key: &str) -> Path {
        self.path.key(key)
    }

    /// Warns about every key nobody asked for.
    pub(crate) fn finish(self, d: &mut Diags) {
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            if !used {
                let mut message = format!("unknown config key {}", quote(key));
                if let Some(near) = suggestion(key, &self.known) {
                    message.push_str(&format!(" (did you mean {}?)", quote(near)));
                }
                d.warn(&self.path.key(key), message);
            }
        }
    }
}

/// The known key closest to a misspelled one, if it is close enough to be a typo.
fn suggestion(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    let limit = (key.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|(dist, _)| *dist <= limit)
        .min_by_key(|(dist, _)| *dist)
        .map(|(_, k)| k)
}

/// Edit distance over chars counting a swap of two neighbours as one edit (optimal string
/// alignment), since transposed letters are the commonest typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

pub(crate) fn mismatch(raw: &Raw, path: &Path, expected: &str, d: &mut Diags) {
    // An `Invalid` value has already been reported.
    if !matches!(raw, Raw::Invalid) {
        d.error(path, format!("expected {expected}, found {}", raw.kind()));
    }
}

pub(crate) fn object<'r>(raw: &'r Raw, path: &Path, d: &mut Diags) -> Option<&'r [(String, Raw)]> {
    match raw {
        Raw::Object(entries) => Some(entries),
        _ => {
            mismatch(raw, path, "an object", d);
            None
        }
    }
}

pub(crate) fn array<'r>(raw: &'r Raw, path: &Path, d: &mut Diags) -> Option<&'r [Raw]> {
    match raw {
        Raw::Array(items) => Some(items),
        _ => {
            mismatch(raw, path, "an array", d);
            None
        }
    }
}

pub(crate) fn string<'r>(raw: &'r Raw, path: &Path, d: &mut Diags) -> Option<&'r str> {
    match raw {
        Raw::String(s) => Some(s),
        _ => {
            mismatch(raw, path, "a string", d);
            None
        }
    }
}

pub(crate) fn boolean(raw: &Raw, path: &Path, d: &mut Diags) -> Option<bool> {
    match raw {
        Raw::Bool(b) => Some(*b),
        _ => {
            mismatch(raw, path, "true or false", d);
            None
        }
    }
}

pub(crate) fn integer(raw: &Raw, path: &Path, d: &mut Diags) -> Option<i64> {
    match raw {
        Raw::Number(n) => {
            let value = n.as_i64();
            if value.is_none() {
                d.error(path, format!("expected an integer, found {n}"));
            }
            value
        }
        _ => {
            mismatch(raw, path, "an integer", d);
            None
        }
    }
}

pub(crate) fn unsigned(raw: &Raw, path: &Path, d: &mut Diags) -> Option<u64> {
    match raw {
        Raw::Number(n) => {
            let value = n.as_u64();
            if value.is_none() {
                d.error(path, format!("expected a non-negative integer, found {n}"));
            }
            value
        }
        _ => {
            mismatch(raw, path, "a non-negative integer", d);
            None
        }
    }
}

/// Aperture's retention duration: `""` (forever), `"0"` (nothing), or a Go duration with an
/// optional `d` unit, between 1h and 3650d.
fn check_retention(s: &str) -> Result<(), String> {
    let s = s.trim();
    if s.is_empty() || s == "0" {
        return Ok(());
    }
    let hours = if let Some(d) = s.strip_suffix('d') {
        d.parse::<f64>()
            .map_err(|_| format!("{s:?} is not a duration like \"30d\" or \"720h\""))?
            * 24.0
    } else {
        crate::parse_duration(s)
            .map_err(|e| e.to_string())?
            .as_secs_f64()
            / 3600.0
    };
    if !(1.0..=3650.0 * 24.0).contains(&hours) {
        return Err("retention must be between 1h and 3650d".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("basurl", "baseurl"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("modle", "model"), 1);
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        let known = ["baseurl", "models", "apikey"];
        assert_eq!(suggestion("basurl", &known), Some("baseurl"));
        assert_eq!(suggestion("BaseURL", &known), Some("baseurl"));
        assert_eq!(suggestion("model", &known), Some("models"));
        assert_eq!(suggestion("zzz", &known), None);
        assert_eq!(suggestion("api", &known), None);
    }
}
