//! Codex `config.toml`: `model_provider = "iris"` at the top level and a `[model_providers.iris]`
//! table, edited with `toml_edit` so every other line, comment and table stays as written.

use toml_edit::{Array, DocumentMut, Item, Table, Value, value};

use super::{KeySource, MergeError, Merged};

const PROVIDER_ID: &str = "iris";

/// Sets `table.key = v`. An existing key keeps its place and the comment lines above it; a
/// comment after the old value on the same line goes with the old value (it described that).
fn set(table: &mut Table, key: &str, v: Value) {
    match table.get_mut(key) {
        Some(item) => *item = Item::Value(v),
        None => {
            table.insert(key, Item::Value(v));
        }
    }
}

pub(super) fn merge_codex(
    existing: &str,
    base_url_v1: &str,
    key: &KeySource,
    model: Option<&str>,
) -> Result<Merged, MergeError> {
    let mut doc: DocumentMut =
        existing
            .parse()
            .map_err(|e: toml_edit::TomlError| MergeError::Parse {
                kind: "TOML",
                detail: e.message().trim().to_owned(),
            })?;
    let mut notes = Vec::new();
    let root = doc.as_table_mut();

    if let Some(old) = root.get("model_provider").and_then(Item::as_str)
        && old != PROVIDER_ID
    {
        notes.push(format!("model_provider was \"{old}\""));
    }
    set(root, "model_provider", Value::from(PROVIDER_ID));
    if let Some(model) = model {
        if let Some(old) = root.get("model").and_then(Item::as_str)
            && old != model
        {
            notes.push(format!("model was \"{old}\""));
        }
        set(root, "model", Value::from(model));
    }

    let providers = root.entry("model_providers").or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    let Some(providers) = providers.as_table_mut() else {
        return Err(MergeError::Shape(
            "`model_providers` is not a [table] (an inline table cannot be merged into; write it as [model_providers.<id>] tables)".to_owned(),
        ));
    };

    let mut ours = Table::new();
    ours["name"] = value("iris");
    ours["base_url"] = value(base_url_v1);
    if let KeySource::Env(name) = key {
        ours["env_key"] = value(name.as_str());
    }
    ours["wire_api"] = value("responses");
    // Codex probes a WebSocket transport first on providers that claim it; iris speaks HTTP.
    ours["supports_websockets"] = value(false);
    match key {
        KeySource::None | KeySource::Env(_) => {}
        KeySource::File(path) => {
            let mut auth = Table::new();
            auth["command"] = value("cat");
            let mut args = Array::new();
            args.push(path.as_str());
            auth["args"] = value(args);
            // The key does not change while Codex runs; re-read it only after a 401.
            auth["refresh_interval_ms"] = value(0);
            ours["auth"] = Item::Table(auth);
        }
    }
    match providers.get(PROVIDER_ID) {
        Some(Item::Table(old)) => {
            // Keep the comments above the old table and its place in the file.
            *ours.decor_mut() = old.decor().clone();
            if let Some(pos) = old.position() {
                ours.set_position(pos);
            }
            notes.push(format!("replaced [model_providers.{PROVIDER_ID}]"));
        }
        Some(_) => {
            notes.push(format!(
                "replaced the inline model_providers.{PROVIDER_ID} with a table"
            ));
        }
        None => {}
    }
    match providers.get_mut(PROVIDER_ID) {
        Some(item) => *item = Item::Table(ours),
        None => {
            providers.insert(PROVIDER_ID, Item::Table(ours));
        }
    }

    let mut text = doc.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(Merged { text, notes })
}
