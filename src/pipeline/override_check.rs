//! `--override-kv` values that would make a file llama.cpp cannot load are refused before any
//! work, instead of being written: an empty key, an integer that does not fit the u32 the
//! override is stored as (llama-quantize stores `|v|`, so −1 silently became 1), a
//! `general.alignment` that is not a power of two, a `general.architecture` that is not a
//! string, or a value whose type differs from the key's type in the input (the loader checks
//! each key's type and refuses the file).

use crate::formats::gguf::{Metadata, Value, ValueType};

/// Why an override is refused.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    /// The key is empty.
    #[error("KV override '{arg}': the key is empty")]
    EmptyKey {
        /// The argument as given.
        arg: String,
    },
    /// An `int:` value outside 0..=u32::MAX (overrides are stored as u32).
    #[error("KV override '{arg}': {value} does not fit the unsigned 32-bit integer an int: override is stored as")]
    IntOutOfRange {
        /// The argument as given.
        arg: String,
        /// The value given.
        value: i64,
    },
    /// A key whose value must have one type given another.
    #[error("KV override '{key}': must be {expected}, got {got:?}")]
    WrongType {
        /// The metadata key.
        key: String,
        /// What was expected.
        expected: String,
        /// What was given.
        got: ValueType,
    },
    /// `general.alignment` that is not a power of two (0 would divide by zero).
    #[error("KV override 'general.alignment': {0} is not a power of two")]
    BadAlignment(u64),
    /// A value whose type differs from the same key's type in the input file.
    #[error("{source_name}: KV override '{key}' is {got:?} but the input's value is {expected:?}; llama.cpp would refuse the file")]
    TypeChanged {
        /// The input.
        source_name: String,
        /// The metadata key.
        key: String,
        /// What was expected.
        expected: ValueType,
        /// What was given.
        got: ValueType,
    },
}

/// Check an `int:` override's value before it is narrowed to the u32 it is stored as.
pub fn check_int(arg: &str, value: i64) -> Result<u32, OverrideError> {
    u32::try_from(value).map_err(|_| OverrideError::IntOutOfRange {
        arg: arg.to_string(),
        value,
    })
}

/// The checks that need only the override itself (`arg` is the whole `KEY=TYPE:VALUE`).
pub fn check_override(arg: &str, key: &str, value: &Value) -> Result<(), OverrideError> {
    if key.is_empty() {
        return Err(OverrideError::EmptyKey {
            arg: arg.to_string(),
        });
    }
    match key {
        "general.alignment" => match value {
            Value::U32(a) if a.is_power_of_two() => Ok(()),
            Value::U32(a) => Err(OverrideError::BadAlignment(*a as u64)),
            other => Err(OverrideError::WrongType {
                key: key.to_string(),
                expected: "an int: power of two".into(),
                got: other.value_type(),
            }),
        },
        "general.architecture" | "general.name" | "tokenizer.ggml.model" => match value {
            Value::Str(_) => Ok(()),
            other => Err(OverrideError::WrongType {
                key: key.to_string(),
                expected: "a str: value".into(),
                got: other.value_type(),
            }),
        },
        _ => Ok(()),
    }
}

/// Refuse overrides whose type differs from the input's value for the same key.
pub fn check_against_source(
    source_name: &str,
    source: &Metadata,
    overrides: &[(String, Value)],
) -> Result<(), OverrideError> {
    for (key, value) in overrides {
        if let Some(old) = source.get(key) {
            if old.value_type() != value.value_type() {
                return Err(OverrideError::TypeChanged {
                    source_name: source_name.to_string(),
                    key: key.clone(),
                    expected: old.value_type(),
                    got: value.value_type(),
                });
            }
        }
    }
    Ok(())
}
