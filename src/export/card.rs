//! README.md: the GGUF's `general.*` authorship keys as the model card's YAML front matter, in
//! the card keys gguf-py's `Metadata` reads them from, so `convert` writes them back whatever the
//! exported directory is called.

use super::{ExportError, Meta};

/// (GGUF key, card key) of the string fields the converter takes from a model card.
const STRING_FIELDS: &[(&str, &str)] = &[
    ("general.name", "name"),
    ("general.author", "author"),
    ("general.version", "version"),
    ("general.organization", "organization"),
    ("general.finetune", "finetune"),
    ("general.basename", "basename"),
    ("general.description", "description"),
    ("general.size_label", "size_label"),
    ("general.license", "license"),
    ("general.license.name", "license_name"),
    ("general.license.link", "license_link"),
    ("general.source.url", "url"),
    ("general.source.doi", "doi"),
    ("general.source.uuid", "uuid"),
    ("general.source.repo_url", "repo_url"),
];

/// (GGUF key, card key) of the string lists.
const LIST_FIELDS: &[(&str, &str)] = &[("general.tags", "tags"), ("general.languages", "language")];

/// A YAML scalar that reads back as exactly `s`: a JSON string is a YAML double-quoted scalar.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The README.md text.
pub fn readme(meta: &Meta<'_>) -> Result<String, ExportError> {
    let mut y = String::from("---\n");
    for (gg, card) in STRING_FIELDS {
        if let Some(v) = meta.str(gg)? {
            y.push_str(&format!("{card}: {}\n", quoted(v)));
        }
    }
    for (gg, card) in LIST_FIELDS {
        if let Some(items) = meta.strings(gg)? {
            y.push_str(&format!("{card}:\n"));
            for it in items {
                y.push_str(&format!("- {}\n", quoted(it)));
            }
        }
    }
    y.push_str("---\n\n");
    let title = meta.str("general.name")?.unwrap_or("Model");
    y.push_str(&format!(
        "# {title}\n\nExported from a GGUF file by `qforge export`; `qforge convert` of this \
         directory gives the same GGUF back.\n"
    ));
    Ok(y)
}
