//! The YAML front matter of a model card (README.md), read into JSON values so the metadata code
//! handles one value type.

use serde_json::{Map, Number, Value as Json};
use yaml_rust2::{Yaml, YamlLoader};

/// Parse front matter as gguf-py does before `yaml.safe_load`: a `- no` list item means the
/// language code, and tabs are indentation.
pub fn front_matter_to_json(text: &str) -> Result<Map<String, Json>, String> {
    let text = text.replace("- no\n", "- \"no\"\n").replace('\t', "  ");
    let docs =
        YamlLoader::load_from_str(&text).map_err(|e| format!("invalid YAML front matter: {e}"))?;
    match docs.into_iter().next().map(to_json) {
        Some(Json::Object(m)) => Ok(m),
        // gguf-py logs and ignores front matter that is not a mapping.
        _ => Ok(Map::new()),
    }
}

fn to_json(y: Yaml) -> Json {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Json::Number)
            .unwrap_or(Json::String(s)),
        Yaml::Integer(i) => Json::Number(i.into()),
        Yaml::String(s) => Json::String(s),
        Yaml::Boolean(b) => Json::Bool(b),
        Yaml::Array(a) => Json::Array(a.into_iter().map(to_json).collect()),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s,
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => {
                        if b {
                            "True".into()
                        } else {
                            "False".into()
                        }
                    }
                    _ => continue,
                };
                m.insert(key, to_json(v));
            }
            Json::Object(m)
        }
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_front_matter_reads_lists_and_strings() {
        let m =
            front_matter_to_json("license: apache-2.0\nlanguage:\n- en\n- no\ntags:\n\t- text\n")
                .unwrap();
        assert_eq!(m["license"], Json::String("apache-2.0".into()));
        assert_eq!(m["language"], serde_json::json!(["en", "no"]));
    }
}
