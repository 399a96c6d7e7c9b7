//! GGUF v3 (ggml/src/gguf.cpp, llama.cpp 0c1e57098): a memory-mapped reader and a streaming writer.
//!
//! The writer reproduces gguf.cpp's layout exactly: header, KV pairs, tensor infos, padding to
//! `general.alignment`, then each tensor's data padded to the alignment with zero bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::formats::atomic::AtomicFile;
use crate::ggml::GgmlType;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Data alignment when `general.alignment` is absent (`GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Hard caps on header fields, so no allocation is driven by an unchecked number.
const MAX_DIMS: u32 = 4;
/// ggml's `GGML_MAX_NAME`: tensor names (with their NUL) must fit in 64 bytes.
const GGML_MAX_NAME: usize = 64;

/// Errors of the GGUF layer; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, mapped, or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file does not start with `GGUF`.
    #[error("{path}: not a GGUF file (bad magic)")]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// Only version 2 and 3 are read.
    #[error("{path}: unsupported GGUF version {version}")]
    BadVersion {
        /// The file.
        path: PathBuf,
        /// The version field read from the header.
        version: u32,
    },
    /// A field points or extends past the end of the file.
    #[error("{path}: truncated or corrupt: {what} at byte {offset} runs past the end of the file ({len} bytes)")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Which field (key, value, tensor info or data).
        what: String,
        /// Where that field starts.
        offset: u64,
        /// The file's length in bytes.
        len: u64,
    },
    /// A header field holds an impossible value.
    #[error("{path}: corrupt header: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Which field and its impossible value.
        what: String,
    },
    /// A tensor's type id is not a ggml type we know.
    #[error("{path}: tensor '{tensor}' has unknown ggml type id {id}")]
    UnknownType {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The type id read.
        id: u32,
    },
}

/// A GGUF value type id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    /// `GGUF_TYPE_UINT8`.
    U8 = 0,
    /// `GGUF_TYPE_INT8`.
    I8 = 1,
    /// `GGUF_TYPE_UINT16`.
    U16 = 2,
    /// `GGUF_TYPE_INT16`.
    I16 = 3,
    /// `GGUF_TYPE_UINT32`.
    U32 = 4,
    /// `GGUF_TYPE_INT32`.
    I32 = 5,
    /// `GGUF_TYPE_FLOAT32`.
    F32 = 6,
    /// `GGUF_TYPE_BOOL`.
    Bool = 7,
    /// `GGUF_TYPE_STRING`.
    Str = 8,
    /// `GGUF_TYPE_ARRAY`.
    Array = 9,
    /// `GGUF_TYPE_UINT64`.
    U64 = 10,
    /// `GGUF_TYPE_INT64`.
    I64 = 11,
    /// `GGUF_TYPE_FLOAT64`.
    F64 = 12,
}

impl ValueType {
    /// The value type with this on-disk id, if it is one.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => Str,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Bytes of a fixed-size value; `None` for strings and arrays.
    fn fixed_size(self) -> Option<u64> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            Str | Array => None,
        }
    }
}

/// A metadata value. Arrays keep their element type even when empty.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An unsigned 8-bit integer.
    U8(u8),
    /// A signed 8-bit integer.
    I8(i8),
    /// An unsigned 16-bit integer.
    U16(u16),
    /// A signed 16-bit integer.
    I16(i16),
    /// An unsigned 32-bit integer.
    U32(u32),
    /// A signed 32-bit integer.
    I32(i32),
    /// A 32-bit float.
    F32(f32),
    /// A boolean (one byte, 0 or 1).
    Bool(bool),
    /// A UTF-8 string (u64 length + bytes on disk).
    Str(String),
    /// An array: its element type and the elements (nested arrays allowed).
    Array(ValueType, Vec<Value>),
    /// An unsigned 64-bit integer.
    U64(u64),
    /// A signed 64-bit integer.
    I64(i64),
    /// A 64-bit float.
    F64(f64),
}

impl Value {
    /// The type id this value is written with.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::Str(_) => ValueType::Str,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The value as an unsigned integer, if it is one of the integer types and not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The string, if the value is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Value::U8(v) => out.push(*v),
            Value::I8(v) => out.push(*v as u8),
            Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Bool(v) => out.push(*v as u8),
            Value::Str(s) => write_str(out, s),
            Value::Array(t, items) => {
                out.extend_from_slice(&(*t as u32).to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for it in items {
                    it.write_to(out);
                }
            }
            Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Ordered metadata, as GGUF stores it. Setting a key that exists removes it and appends it, as
/// `gguf_set_*` does, so re-set keys move to the end.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Remove `key` if present and append it with `value` (gguf.cpp semantics).
    pub fn set(&mut self, key: &str, value: Value) {
        self.remove(key);
        self.entries.push((key.to_string(), value));
    }

    /// Removes `key`, returning its value if it was set.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// Keeps only the keys for which `keep` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|(k, _)| keep(k));
    }

    /// (key, value) pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `general.alignment` if set, else 32.
    pub fn alignment(&self) -> u64 {
        self.get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// `key` as an unsigned integer (any integer type, not negative).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// `key` as a string, if it is one.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

/// Name, type and shape of a tensor; `ne` is ggml order (`ne[0]` = row length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Its ggml type.
    pub ty: GgmlType,
    /// Its dimensions, ggml order (`ne[0]` is the row length).
    pub ne: Vec<u64>,
    /// Offset of the data relative to the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (product of `ne`).
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }

    /// Number of rows (product of ne[1..]).
    pub fn n_rows(&self) -> u64 {
        self.ne.iter().skip(1).product()
    }

    /// Bytes of the data, or `None` when the row length is not a whole number of blocks or the
    /// size overflows.
    pub fn n_bytes(&self) -> Option<u64> {
        let row = self.ty.row_size(*self.ne.first()?)?;
        // Checked: a hostile shape's row count can overflow u64 (found by fuzzing).
        let rows = self
            .ne
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
        row.checked_mul(rows)
    }
}

/// A memory-mapped GGUF file, validated on open.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    /// The GGUF version in the header (2 or 3).
    pub version: u32,
    /// The key/value metadata, in file order.
    pub metadata: Metadata,
    /// The tensor infos, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let end = (self.pos as u64).checked_add(n);
        match end {
            Some(end) if end <= self.buf.len() as u64 => {
                let s = &self.buf[self.pos..end as usize];
                self.pos = end as usize;
                Ok(s)
            }
            _ => Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                offset: self.pos as u64,
                len: self.buf.len() as u64,
            }),
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let n = self.u64(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Corrupt {
            path: self.path.to_path_buf(),
            what: format!("{what} is not valid UTF-8"),
        })
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn value(&mut self, t: ValueType, what: &str, depth: u32) -> Result<Value, GgufError> {
        Ok(match t {
            ValueType::U8 => Value::U8(self.take(1, what)?[0]),
            ValueType::I8 => Value::I8(self.take(1, what)?[0] as i8),
            ValueType::U16 => {
                Value::U16(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
            }
            ValueType::I16 => {
                Value::I16(i16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
            }
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(self.u32(what)? as i32),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32(what)?)),
            ValueType::Bool => {
                let b = self.take(1, what)?[0];
                if b > 1 {
                    return Err(self.corrupt(format!("{what}: bool value {b}")));
                }
                Value::Bool(b == 1)
            }
            ValueType::Str => Value::Str(self.string(what)?),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(self.u64(what)? as i64),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64(what)?)),
            ValueType::Array => {
                if depth > 0 {
                    return Err(self.corrupt(format!("{what}: nested arrays are not supported")));
                }
                let et_id = self.u32(what)?;
                let et = ValueType::from_id(et_id).ok_or_else(|| {
                    self.corrupt(format!("{what}: unknown array element type {et_id}"))
                })?;
                let n = self.u64(what)?;
                // Every element takes at least one byte (strings eight): bound the count by the
                // bytes left before allocating.
                let min = et.fixed_size().unwrap_or(8);
                if n.checked_mul(min).is_none_or(|b| b > self.remaining()) {
                    return Err(GgufError::Truncated {
                        path: self.path.to_path_buf(),
                        what: format!("{what}: array of {n} elements"),
                        offset: self.pos as u64,
                        len: self.buf.len() as u64,
                    });
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(et, what, depth + 1)?);
                }
                Value::Array(et, items)
            }
        })
    }

    fn corrupt(&self, what: String) -> GgufError {
        GgufError::Corrupt {
            path: self.path.to_path_buf(),
            what,
        }
    }
}

impl GgufFile {
    /// Map and parse `path`, checking every count, length and offset against the file size.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // mmap of a directory or a device fails with "No such device": say what it is instead.
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "is a directory, not a GGUF file"
            } else {
                "is not a regular file (a device, FIFO or socket)"
            };
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                what,
            )));
        }
        // SAFETY: the map is read-only; a file changed underneath us while mapped is outside
        // what any mmap-based reader can defend against.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(path.to_path_buf(), map)
    }

    fn parse(path: PathBuf, map: Mmap) -> Result<GgufFile, GgufError> {
        let (version, metadata, tensors, data_offset) = {
            let mut c = Cursor {
                path: &path,
                buf: &map,
                pos: 0,
            };
            if c.take(4, "magic").ok() != Some(GGUF_MAGIC.as_slice()) {
                return Err(GgufError::BadMagic { path: path.clone() });
            }
            let version = c.u32("version")?;
            if version != 2 && version != 3 {
                return Err(GgufError::BadVersion {
                    path: path.clone(),
                    version,
                });
            }
            let n_tensors = c.u64("tensor count")?;
            let n_kv = c.u64("KV count")?;
            // A KV pair takes at least 8+4+1 bytes, a tensor info at least 8+4+4+8.
            if n_kv.checked_mul(13).is_none_or(|b| b > c.remaining()) {
                return Err(c.corrupt(format!("KV count {n_kv} exceeds what the file can hold")));
            }
            if n_tensors.checked_mul(24).is_none_or(|b| b > c.remaining()) {
                return Err(c.corrupt(format!(
                    "tensor count {n_tensors} exceeds what the file can hold"
                )));
            }
            let mut metadata = Metadata::new();
            for i in 0..n_kv {
                let key = c.string(&format!("key of KV pair {i}"))?;
                let tid = c.u32(&format!("type of key '{key}'"))?;
                let t = ValueType::from_id(tid).ok_or_else(|| {
                    c.corrupt(format!("key '{key}' has unknown value type {tid}"))
                })?;
                let v = c.value(t, &format!("value of key '{key}'"), 0)?;
                if metadata.get(&key).is_some() {
                    return Err(c.corrupt(format!("duplicate key '{key}'")));
                }
                metadata.entries.push((key, v));
            }
            // gguf.cpp reads general.alignment only as a u32 and refuses any other type.
            if let Some(v) = metadata.get("general.alignment") {
                if v.value_type() != ValueType::U32 {
                    return Err(c.corrupt(format!(
                        "general.alignment is {:?}, llama.cpp requires a u32",
                        v.value_type()
                    )));
                }
            }
            let alignment = metadata.alignment();
            if alignment == 0 || !alignment.is_power_of_two() {
                return Err(c.corrupt(format!(
                    "general.alignment {alignment} is not a power of two"
                )));
            }
            let mut tensors = Vec::with_capacity(n_tensors as usize);
            for i in 0..n_tensors {
                let name = c.string(&format!("name of tensor {i}"))?;
                if name.len() >= GGML_MAX_NAME {
                    return Err(c.corrupt(format!(
                        "tensor name '{name}' is {} bytes; llama.cpp allows at most {}",
                        name.len(),
                        GGML_MAX_NAME - 1
                    )));
                }
                let n_dims = c.u32(&format!("dimension count of tensor '{name}'"))?;
                if n_dims > MAX_DIMS {
                    return Err(c.corrupt(format!("tensor '{name}' has {n_dims} dimensions")));
                }
                let mut ne = Vec::with_capacity(n_dims as usize);
                for _ in 0..n_dims {
                    let d = c.u64(&format!("shape of tensor '{name}'"))?;
                    if d as i64 <= 0 {
                        return Err(
                            c.corrupt(format!("tensor '{name}' has dimension {}", d as i64))
                        );
                    }
                    ne.push(d);
                }
                // gguf.cpp refuses shapes whose element count overflows int64_t; so do we,
                // before any size is computed from them.
                if ne
                    .iter()
                    .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                    .is_none_or(|n| n > i64::MAX as u64)
                {
                    return Err(c.corrupt(format!(
                        "tensor '{name}' has shape {ne:?}, whose element count overflows"
                    )));
                }
                let tid = c.u32(&format!("type of tensor '{name}'"))?;
                let ty = GgmlType::from_id(tid).ok_or_else(|| GgufError::UnknownType {
                    path: path.clone(),
                    tensor: name.clone(),
                    id: tid,
                })?;
                let offset = c.u64(&format!("offset of tensor '{name}'"))?;
                if tensors.iter().any(|t: &TensorInfo| t.name == name) {
                    return Err(c.corrupt(format!("duplicate tensor name '{name}'")));
                }
                tensors.push(TensorInfo {
                    name,
                    ty,
                    ne,
                    offset,
                });
            }
            let data_offset = align_up(c.pos as u64, alignment);
            (version, metadata, tensors, data_offset)
        };
        let file_len = map.len() as u64;
        let alignment = metadata.alignment();
        for t in &tensors {
            let size = t.n_bytes().ok_or_else(|| GgufError::Corrupt {
                path: path.clone(),
                what: format!(
                    "tensor '{}' ({} {:?}) is not a whole number of blocks",
                    t.name, t.ty, t.ne
                ),
            })?;
            let start = data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(size));
            if end.is_none_or(|e| e > file_len) {
                return Err(GgufError::Truncated {
                    path: path.clone(),
                    what: format!("data of tensor '{}' ({size} bytes)", t.name),
                    offset: start.unwrap_or(u64::MAX),
                    len: file_len,
                });
            }
        }
        // gguf.cpp requires each tensor at exactly the aligned end of the one before it: an
        // unaligned, overlapping or gapped offset makes llama.cpp refuse the file, and copying
        // such a layout through would write a file it refuses too.
        let mut expected_offset = 0u64;
        for t in &tensors {
            if t.offset != expected_offset {
                return Err(GgufError::Corrupt {
                    path: path.clone(),
                    what: format!(
                        "tensor '{}' has data offset {}, expected {expected_offset} (tensors must be \
                         laid out in order, each aligned to {alignment} bytes, with no gaps or overlaps)",
                        t.name, t.offset
                    ),
                });
            }
            let size = t.n_bytes().unwrap_or(0);
            expected_offset = expected_offset.saturating_add(align_up(size, alignment));
        }
        Ok(GgufFile {
            path,
            map,
            version,
            metadata,
            tensors,
            data_offset,
        })
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor (bounds were checked on open).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + t.offset) as usize;
        &self.map[start..start + t.n_bytes().expect("checked on open") as usize]
    }

    /// Tell the kernel this tensor's pages will not be read again soon, so a streaming reader's
    /// resident memory stays one tensor deep instead of growing to the file size. The pages stay in
    /// the page cache; a later read faults them back in from the file. Only whole pages inside the
    /// tensor are released.
    pub fn release_tensor_pages(&self, t: &TensorInfo) {
        #[cfg(unix)]
        {
            const PAGE: usize = 4096;
            let start = (self.data_offset + t.offset) as usize;
            let end = start + t.n_bytes().unwrap_or(0) as usize;
            let first = start.div_ceil(PAGE) * PAGE;
            let last = end / PAGE * PAGE;
            if last > first {
                // SAFETY: the map is read-only and private; dropping its pages cannot lose data,
                // and no slice into this range is used after the caller releases it.
                let _ = unsafe {
                    self.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        first,
                        last - first,
                    )
                };
            }
        }
        #[cfg(not(unix))]
        let _ = t;
    }
}

/// `x` rounded up to a multiple of `a`.
pub fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Writes a GGUF file the way gguf.cpp lays it out: the whole header first (offsets computed
/// from each tensor's size), then tensor data streamed in order. Output goes to a temporary file
/// that becomes `path` only on [`GgufWriter::finish`].
pub struct GgufWriter {
    out: BufWriter<AtomicFile>,
    path: PathBuf,
    tensors: Vec<TensorInfo>,
    next: usize,
    alignment: u64,
    written: u64,
}

impl GgufWriter {
    /// Create the temporary file and write the header. `tensors` offsets are recomputed.
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &Metadata,
        tensors: &[(String, GgmlType, Vec<u64>)],
    ) -> Result<GgufWriter, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let alignment = metadata.alignment();
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufError::Corrupt {
                path,
                what: format!("general.alignment {alignment} is not a power of two"),
            });
        }
        let mut infos = Vec::with_capacity(tensors.len());
        let mut offset = 0u64;
        for (name, ty, ne) in tensors {
            let info = TensorInfo {
                name: name.clone(),
                ty: *ty,
                ne: ne.clone(),
                offset,
            };
            let size = info.n_bytes().ok_or_else(|| GgufError::Corrupt {
                path: path.clone(),
                what: format!("tensor '{name}' ({ty} {ne:?}) is not a whole number of blocks"),
            })?;
            offset += align_up(size, alignment);
            infos.push(info);
        }
        let header = encode_header(metadata, &infos, alignment);
        let file = AtomicFile::create(&path).map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header).map_err(io)?;
        Ok(GgufWriter {
            out,
            path,
            tensors: infos,
            next: 0,
            alignment,
            written: 0,
        })
    }

    /// The tensor infos as they will be written (with their offsets).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Append the data of the next tensor in order. `data` may come in several pieces: call
    /// [`GgufWriter::write_part`] then [`GgufWriter::end_tensor`] instead.
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<(), GgufError> {
        self.write_part(data)?;
        self.end_tensor()
    }

    /// Append part of the current tensor's data.
    pub fn write_part(&mut self, data: &[u8]) -> Result<(), GgufError> {
        let Some(t) = self.tensors.get(self.next) else {
            return Err(self.corrupt("more tensor data than tensors".into()));
        };
        let size = t.n_bytes().unwrap();
        if self.written + data.len() as u64 > size {
            return Err(self.corrupt(format!(
                "tensor '{}': {} bytes written, expected {size}",
                t.name,
                self.written + data.len() as u64
            )));
        }
        self.written += data.len() as u64;
        let path = self.path.clone();
        self.out
            .write_all(data)
            .map_err(|source| GgufError::Io { path, source })
    }

    /// Finish the current tensor: check its size and pad to the alignment.
    pub fn end_tensor(&mut self) -> Result<(), GgufError> {
        let t = &self.tensors[self.next];
        let size = t.n_bytes().unwrap();
        if self.written != size {
            return Err(self.corrupt(format!(
                "tensor '{}': {} bytes written, expected {size}",
                t.name, self.written
            )));
        }
        let pad = align_up(size, self.alignment) - size;
        let path = self.path.clone();
        self.out
            .write_all(&vec![0u8; pad as usize])
            .map_err(|source| GgufError::Io { path, source })?;
        self.next += 1;
        self.written = 0;
        Ok(())
    }

    /// Flush, sync and rename the temporary file onto the output path.
    pub fn finish(self) -> Result<(), GgufError> {
        if self.next != self.tensors.len() {
            return Err(self.corrupt(format!(
                "only {} of {} tensors written",
                self.next,
                self.tensors.len()
            )));
        }
        let path = self.path.clone();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.commit().map_err(io)
    }

    fn corrupt(&self, what: String) -> GgufError {
        GgufError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }
}

/// The header bytes, padded to the alignment.
pub fn encode_header(metadata: &Metadata, tensors: &[TensorInfo], alignment: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(1 << 16);
    h.extend_from_slice(GGUF_MAGIC);
    h.extend_from_slice(&3u32.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    h.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata.iter() {
        write_str(&mut h, k);
        h.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
        v.write_to(&mut h);
    }
    for t in tensors {
        write_str(&mut h, &t.name);
        h.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            h.extend_from_slice(&d.to_le_bytes());
        }
        h.extend_from_slice(&t.ty.id().to_le_bytes());
        h.extend_from_slice(&t.offset.to_le_bytes());
    }
    let padded = align_up(h.len() as u64, alignment) as usize;
    h.resize(padded, 0);
    h
}

/// ggml drops trailing dimensions of 1 when writing (keeping at least one).
pub fn trim_dims(ne: &[u64]) -> Vec<u64> {
    let mut v = ne.to_vec();
    while v.len() > 1 && *v.last().unwrap() == 1 {
        v.pop();
    }
    v
}
