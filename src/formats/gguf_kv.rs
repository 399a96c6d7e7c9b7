//! Metadata as gguf-py's `GGUFWriter` collects it: a Python dict, so adding a key that exists
//! replaces its value in place (it keeps its first position). This differs from gguf.cpp, where
//! re-setting a key moves it to the end, so the converter builds its keys here first.

use crate::formats::gguf::{Metadata, Value, ValueType};

#[derive(Clone, Debug, Default, PartialEq)]
/// The converter's metadata under construction: keys in first-added order, values replaced in
/// place.
pub struct KvList {
    entries: Vec<(String, Value)>,
}

impl KvList {
    /// An empty list.
    pub fn new() -> KvList {
        KvList::default()
    }

    /// `add_key_value`: overwrite in place, or append.
    pub fn add(&mut self, key: &str, value: Value) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    /// `add_string`: an empty string is not written at all.
    pub fn add_str(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.add(key, Value::Str(value.to_string()));
        }
    }

    /// `add_uint32`.
    pub fn add_u32(&mut self, key: &str, value: u32) {
        self.add(key, Value::U32(value));
    }

    /// `add_int32`.
    pub fn add_i32(&mut self, key: &str, value: i32) {
        self.add(key, Value::I32(value));
    }

    /// `add_float32`: the value is rounded from Python's double once, here.
    pub fn add_f32(&mut self, key: &str, value: f64) {
        self.add(key, Value::F32(value as f32));
    }

    /// `add_bool`.
    pub fn add_bool(&mut self, key: &str, value: bool) {
        self.add(key, Value::Bool(value));
    }

    /// `add_array`: an empty array is not written at all.
    pub fn add_array(&mut self, key: &str, ty: ValueType, items: Vec<Value>) {
        if !items.is_empty() {
            self.add(key, Value::Array(ty, items));
        }
    }

    /// `add_array` of strings: an empty list is not written.
    pub fn add_str_array(&mut self, key: &str, items: Vec<String>) {
        self.add_array(
            key,
            ValueType::Str,
            items.into_iter().map(Value::Str).collect(),
        );
    }

    /// Drops `key` if present.
    pub fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    /// The value of `key`, if added.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys in their final order as GGUF metadata.
    pub fn into_metadata(self) -> Metadata {
        let mut m = Metadata::new();
        for (k, v) in self.entries {
            m.set(&k, v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_adding_a_key_keeps_its_place() {
        let mut kv = KvList::new();
        kv.add_bool("a", true);
        kv.add_u32("b", 1);
        kv.add_bool("a", false);
        kv.add_str("empty", "");
        let m = kv.into_metadata();
        let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(m.get("a"), Some(&Value::Bool(false)));
    }
}
