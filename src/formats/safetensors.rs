//! safetensors checkpoints: single files, sharded directories (`model.safetensors.index.json`),
//! and a streaming writer.
//!
//! Reading goes through a memory map; the `safetensors` crate parses and validates each header
//! (offsets contiguous, in bounds, sizes equal to dtype × shape, file ends where the data ends),
//! so no tensor is ever read from a range the header did not prove. Tensors are listed in the
//! order llama.cpp's converter visits them: shard files sorted by name, and inside a shard the
//! tensor names sorted (Python's `safetensors` order).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::{Mmap, UncheckedAdvice};
pub use safetensors::Dtype;

use crate::formats::atomic::AtomicFile;

/// Errors of the safetensors layer; each names the file (and the tensor when there is one).
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// The file could not be opened, mapped, or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The header is not a valid safetensors header, or offsets disagree with the file.
    #[error("{path}: not a valid safetensors file: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with the header.
        what: String,
    },
    /// A tensor's element type is not one this reader converts.
    #[error("{path}: tensor '{tensor}' has dtype {dtype:?}, which is not supported (only F32, F16 and BF16 are)")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its element type.
        dtype: Dtype,
    },
    /// `model.safetensors.index.json` is unreadable or malformed.
    #[error("{path}: bad shard index: {what}")]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A shard named by the index is not there.
    #[error("{index}: shard '{shard}' named by the index is missing")]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The shard file name it lists.
        shard: String,
    },
    /// Tensors listed by the index and tensors found in the shards disagree.
    #[error("{index}: the shards do not hold what the index lists: {what}")]
    IndexMismatch {
        /// The index file.
        index: PathBuf,
        /// The first disagreement found.
        what: String,
    },
    /// The same tensor name occurs in two files.
    #[error("tensor '{tensor}' occurs in both {first} and {second}")]
    DuplicateTensor {
        /// The tensor name.
        tensor: String,
        /// The file it was found in first.
        first: PathBuf,
        /// The other file holding it.
        second: PathBuf,
    },
    /// The directory holds no safetensors weights (nor torch.save ones).
    #[error("{dir}: no safetensors weights found (expected model.safetensors, model-*.safetensors or model.safetensors.index.json), nor torch.save ones (pytorch_model*.bin, pytorch_model.bin.index.json, model.pt)")]
    NoWeights {
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// A torch.save checkpoint (`pytorch_model*.bin`, `model.pt`) was refused.
    #[error(transparent)]
    Torch(#[from] Box<crate::formats::torch_zip::TorchError>),
}

/// One tensor of a safetensors file: name, element type, shape (outermost first, as PyTorch), and
/// its absolute byte range in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StTensor {
    /// The tensor's name in the header.
    pub name: String,
    /// Its element type.
    pub dtype: Dtype,
    /// Its shape, outermost dimension first (PyTorch order).
    pub shape: Vec<usize>,
    start: usize,
    len: usize,
}

impl StTensor {
    /// Number of elements (product of the shape).
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of the data.
    pub fn n_bytes(&self) -> usize {
        self.len
    }
}

/// Bytes per element of the float types this reader converts.
pub fn float_dtype_size(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F32 => Some(4),
        Dtype::F16 | Dtype::BF16 => Some(2),
        _ => None,
    }
}

/// A memory-mapped safetensors file, validated on open.
pub struct SafetensorsFile {
    path: PathBuf,
    map: Mmap,
    tensors: Vec<StTensor>,
    metadata: Option<HashMap<String, String>>,
}

impl SafetensorsFile {
    /// Map and validate `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile, SafetensorsError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| SafetensorsError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        // mmap of a directory or a device fails with "No such device": say what it is instead.
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is not a regular file",
            )));
        }
        // SAFETY: the map is read-only; a file changed underneath us while mapped is outside
        // what any mmap-based reader can defend against.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
            SafetensorsError::Corrupt {
                path: path.clone(),
                what: describe_error(&e),
            }
        })?;
        let data_start = 8 + header_len;
        let mut tensors: Vec<StTensor> = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| StTensor {
                name,
                dtype: info.dtype,
                shape: info.shape.clone(),
                start: data_start + info.data_offsets.0,
                len: info.data_offsets.1 - info.data_offsets.0,
            })
            .collect();
        // Python's safetensors (and so llama.cpp's converter) lists tensors sorted by name.
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        for t in &tensors {
            // read_metadata proved this already; keep the invariant local to this file too.
            if t.start.checked_add(t.len).is_none_or(|end| end > map.len()) {
                return Err(SafetensorsError::Corrupt {
                    path: path.clone(),
                    what: format!("tensor '{}' runs past the end of the file", t.name),
                });
            }
        }
        Ok(SafetensorsFile {
            path,
            map,
            tensors,
            metadata: meta.metadata().clone(),
        })
    }

    /// A torch.save checkpoint's tensors served like a safetensors file's (sorted by name), and
    /// their positions in the checkpoint's own key order.
    pub fn from_torch(tf: crate::formats::torch_zip::TorchFile) -> (SafetensorsFile, Vec<String>) {
        let order = tf.tensors.iter().map(|t| t.name.clone()).collect();
        let mut tensors: Vec<StTensor> = tf
            .tensors
            .into_iter()
            .map(|t| StTensor {
                name: t.name,
                dtype: t.dtype,
                shape: t.shape,
                start: t.start,
                len: t.len,
            })
            .collect();
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        let file = SafetensorsFile {
            path: tf.path,
            map: tf.map,
            tensors,
            metadata: None,
        };
        (file, order)
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensors sorted by name.
    pub fn tensors(&self) -> &[StTensor] {
        &self.tensors
    }

    /// The tensor named `name`, if present (binary search over the sorted list).
    pub fn tensor(&self, name: &str) -> Option<&StTensor> {
        self.tensor_index(name).map(|i| &self.tensors[i])
    }

    /// Position of a tensor in [`SafetensorsFile::tensors`].
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
    }

    /// The `__metadata__` strings of the header.
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.metadata.as_ref()
    }

    /// The raw bytes of a tensor of this file.
    pub fn data(&self, t: &StTensor) -> &[u8] {
        &self.map[t.start..t.start + t.len]
    }

    /// Check that `t` is F32, F16 or BF16.
    pub fn check_float(&self, t: &StTensor) -> Result<(), SafetensorsError> {
        match float_dtype_size(t.dtype) {
            Some(_) => Ok(()),
            None => Err(SafetensorsError::UnsupportedDtype {
                path: self.path.clone(),
                tensor: t.name.clone(),
                dtype: t.dtype,
            }),
        }
    }

    /// Elements `[start, start + out.len())` of a float tensor, converted exactly to f32.
    pub fn read_f32(
        &self,
        t: &StTensor,
        start: usize,
        out: &mut [f32],
    ) -> Result<(), SafetensorsError> {
        self.check_float(t)?;
        let size = float_dtype_size(t.dtype).unwrap();
        let bytes = &self.data(t)[start * size..(start + out.len()) * size];
        floats_to_f32(t.dtype, bytes, out);
        Ok(())
    }

    /// Let the kernel drop the pages of `t` from this process: its data has been consumed.
    /// Keeps the resident set bounded when a whole checkpoint is read through the map.
    pub fn release(&self, t: &StTensor) {
        self.release_range(t, 0, t.len);
    }

    /// Like [`SafetensorsFile::release`] for bytes `[offset, offset + len)` of `t`'s data.
    pub fn release_range(&self, t: &StTensor, offset: usize, len: usize) {
        let len = len.min(t.len.saturating_sub(offset));
        if len == 0 {
            return;
        }
        // SAFETY: the map is a read-only file mapping; after MADV_DONTNEED a later access simply
        // faults the pages back in from the file, so no data can be lost or changed (even if
        // another thread is still reading a page that shares the range's edge).
        let _ = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, t.start + offset, len)
        };
    }
}

/// Convert little-endian F32/F16/BF16 bytes to f32 (exact for all three).
pub fn floats_to_f32(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        other => unreachable!("floats_to_f32 called with {other:?}"),
    }
}

fn describe_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => "file is shorter than the 8-byte header length".into(),
        E::InvalidHeaderLength => "header length runs past the end of the file".into(),
        E::MetadataIncompleteBuffer => {
            "the tensor data does not end where the file ends (truncated or padded file)".into()
        }
        E::InvalidOffset(name) => format!("tensor '{name}' has invalid data offsets"),
        E::TensorInvalidInfo => "a tensor's byte size disagrees with its dtype and shape".into(),
        other => other.to_string(),
    }
}

/// Where one tensor of a checkpoint lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorLocation {
    /// Index into [`Checkpoint::files`].
    pub file: usize,
    /// Index into that file's [`SafetensorsFile::tensors`].
    pub index: usize,
}

/// All safetensors files of a checkpoint directory, with tensors in converter order.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<SafetensorsFile>,
    order: Vec<TensorLocation>,
}

impl Checkpoint {
    /// Open the weights of `dir` as llama.cpp's converter finds them: if
    /// `model.safetensors.index.json` exists, the shards it names (sorted), which must hold
    /// exactly the tensors it lists; otherwise every `model*.safetensors` file, sorted; with no
    /// safetensors at all, the torch.save checkpoints (see `torch_parts`), each in its pickle's
    /// key order.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Checkpoint, SafetensorsError> {
        let dir = dir.as_ref().to_path_buf();
        let index_path = dir.join("model.safetensors.index.json");
        let (part_names, index) = if index_path.is_file() {
            let weight_map = read_index(&index_path)?;
            let mut parts: Vec<String> = weight_map.values().cloned().collect();
            parts.sort();
            parts.dedup();
            for p in &parts {
                if !dir.join(p).is_file() {
                    return Err(SafetensorsError::MissingShard {
                        index: index_path.clone(),
                        shard: p.clone(),
                    });
                }
            }
            (parts, Some(weight_map))
        } else {
            let mut parts = Vec::new();
            let entries = std::fs::read_dir(&dir).map_err(|source| SafetensorsError::Io {
                path: dir.clone(),
                source,
            })?;
            for e in entries {
                let e = e.map_err(|source| SafetensorsError::Io {
                    path: dir.clone(),
                    source,
                })?;
                if let Some(name) = e.file_name().to_str() {
                    if name.starts_with("model") && name.ends_with(".safetensors") {
                        parts.push(name.to_string());
                    }
                }
            }
            parts.sort();
            (parts, None)
        };
        // No safetensors: torch.save checkpoints, as the converter falls back to them.
        let (part_names, index, index_path, torch) = if part_names.is_empty() {
            match torch_parts(&dir)? {
                Some((parts, index, index_path)) => (parts, index, index_path, true),
                None => return Err(SafetensorsError::NoWeights { dir }),
            }
        } else {
            (part_names, index, index_path, false)
        };
        let mut files = Vec::with_capacity(part_names.len());
        // Each file's tensors in the order the converter visits them.
        let mut file_orders: Vec<Vec<usize>> = Vec::with_capacity(part_names.len());
        for p in &part_names {
            if torch {
                let tf =
                    crate::formats::torch_zip::TorchFile::open(dir.join(p)).map_err(Box::new)?;
                let (f, names) = SafetensorsFile::from_torch(tf);
                let positions = names
                    .iter()
                    .map(|n| f.tensor_index(n).expect("every name was indexed"))
                    .collect();
                file_orders.push(positions);
                files.push(f);
            } else {
                let f = SafetensorsFile::open(dir.join(p))?;
                file_orders.push((0..f.tensors().len()).collect());
                files.push(f);
            }
        }
        let mut order = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (fi, f) in files.iter().enumerate() {
            for &ti in &file_orders[fi] {
                let t = &f.tensors()[ti];
                if let Some(&prev) = seen.get(t.name.as_str()) {
                    return Err(SafetensorsError::DuplicateTensor {
                        tensor: t.name.clone(),
                        first: files[prev].path().to_path_buf(),
                        second: f.path().to_path_buf(),
                    });
                }
                seen.insert(&t.name, fi);
                order.push(TensorLocation {
                    file: fi,
                    index: ti,
                });
            }
        }
        if let Some(weight_map) = &index {
            let missing: Vec<&str> = weight_map
                .keys()
                .filter(|k| !seen.contains_key(k.as_str()))
                .map(String::as_str)
                .collect();
            let extra: Vec<&str> = seen
                .keys()
                .filter(|k| !weight_map.contains_key(**k))
                .copied()
                .collect();
            if !missing.is_empty() || !extra.is_empty() {
                let mut extra = extra;
                extra.sort();
                let shown = |v: &[&str]| {
                    let mut s = v.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
                    if v.len() > 8 {
                        s.push_str(&format!(", … ({} in all)", v.len()));
                    }
                    s
                };
                let mut what = Vec::new();
                if !missing.is_empty() {
                    what.push(format!("missing tensors [{}]", shown(&missing)));
                }
                if !extra.is_empty() {
                    what.push(format!("tensors not in the index [{}]", shown(&extra)));
                }
                return Err(SafetensorsError::IndexMismatch {
                    index: index_path,
                    what: what.join("; "),
                });
            }
        }
        Ok(Checkpoint { dir, files, order })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The safetensors files, shard order.
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// Every tensor, in converter order.
    pub fn order(&self) -> &[TensorLocation] {
        &self.order
    }

    /// The file holding the tensor at `loc`.
    pub fn file(&self, loc: TensorLocation) -> &SafetensorsFile {
        &self.files[loc.file]
    }

    /// The tensor at `loc`.
    pub fn tensor(&self, loc: TensorLocation) -> &StTensor {
        &self.files[loc.file].tensors()[loc.index]
    }

    /// Find a tensor by name.
    pub fn find(&self, name: &str) -> Option<TensorLocation> {
        self.files.iter().enumerate().find_map(|(fi, f)| {
            f.tensors()
                .binary_search_by(|t| t.name.as_str().cmp(name))
                .ok()
                .map(|ti| TensorLocation {
                    file: fi,
                    index: ti,
                })
        })
    }
}

/// The torch.save parts of `dir` as the converter finds them when there are no safetensors: the
/// shards `pytorch_model.bin.index.json` names (sorted), else every `pytorch_model*.bin`
/// (sorted); else a lone `model.pt` (which the converter itself does not look for). Returns the
/// parts, the index's weight map and the index path.
#[allow(clippy::type_complexity)]
fn torch_parts(
    dir: &Path,
) -> Result<Option<(Vec<String>, Option<BTreeMap<String, String>>, PathBuf)>, SafetensorsError> {
    let index_path = dir.join("pytorch_model.bin.index.json");
    if index_path.is_file() {
        let weight_map = read_index(&index_path)?;
        let mut parts: Vec<String> = weight_map.values().cloned().collect();
        parts.sort();
        parts.dedup();
        for p in &parts {
            if !dir.join(p).is_file() {
                return Err(SafetensorsError::MissingShard {
                    index: index_path.clone(),
                    shard: p.clone(),
                });
            }
        }
        return Ok(Some((parts, Some(weight_map), index_path)));
    }
    let entries = std::fs::read_dir(dir).map_err(|source| SafetensorsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut parts = Vec::new();
    for e in entries {
        let e = e.map_err(|source| SafetensorsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if let Some(name) = e.file_name().to_str() {
            if name.starts_with("pytorch_model") && name.ends_with(".bin") {
                parts.push(name.to_string());
            }
        }
    }
    parts.sort();
    if parts.is_empty() && dir.join("model.pt").is_file() {
        parts.push("model.pt".to_string());
    }
    Ok((!parts.is_empty()).then_some((parts, None, index_path)))
}

/// The `weight_map` of a shard index, kept sorted by tensor name.
fn read_index(path: &Path) -> Result<BTreeMap<String, String>, SafetensorsError> {
    let bad = |what: String| SafetensorsError::BadIndex {
        path: path.to_path_buf(),
        what,
    };
    let text = std::fs::read_to_string(path).map_err(|source| SafetensorsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no 'weight_map' object".into()))?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let shard = v
            .as_str()
            .ok_or_else(|| bad(format!("entry for '{k}' is not a file name")))?;
        // A shard name is a plain file name in the model directory, never a path elsewhere.
        if shard.is_empty() || shard.contains('/') || shard.contains('\\') || shard == ".." {
            return Err(bad(format!("entry for '{k}' names '{shard}', not a file")));
        }
        out.insert(k.clone(), shard.to_string());
    }
    Ok(out)
}

/// Name of a dtype as the safetensors header spells it.
fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

/// Streams a safetensors file: the header first (offsets from the declared shapes), then each
/// tensor's bytes in order. Written to a temporary file renamed on [`SafetensorsWriter::finish`].
pub struct SafetensorsWriter {
    out: BufWriter<AtomicFile>,
    path: PathBuf,
    sizes: Vec<(String, usize)>,
    next: usize,
    written: usize,
}

impl SafetensorsWriter {
    /// Write the header for `tensors` (name, dtype, shape) in the given order, with optional
    /// `__metadata__` strings.
    pub fn create(
        path: impl AsRef<Path>,
        tensors: &[(String, Dtype, Vec<usize>)],
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Result<SafetensorsWriter, SafetensorsError> {
        let path = path.as_ref().to_path_buf();
        let mut header = String::from("{");
        let mut first = true;
        if let Some(m) = metadata {
            header.push_str("\"__metadata__\":");
            header.push_str(&serde_json::to_string(m).expect("strings serialize"));
            first = false;
        }
        let mut offset = 0usize;
        let mut sizes = Vec::with_capacity(tensors.len());
        let mut names = std::collections::HashSet::new();
        for (name, dtype, shape) in tensors {
            if name == "__metadata__" || !names.insert(name.as_str()) {
                return Err(SafetensorsError::Corrupt {
                    path,
                    what: format!("tensor name '{name}' is reserved or repeated"),
                });
            }
            let bits = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .and_then(|n| n.checked_mul(dtype.bitsize()));
            let size = match bits {
                Some(b) if b % 8 == 0 => b / 8,
                _ => {
                    return Err(SafetensorsError::Corrupt {
                        path,
                        what: format!("tensor '{name}' has an impossible size"),
                    })
                }
            };
            if !first {
                header.push(',');
            }
            first = false;
            header.push_str(&serde_json::to_string(name).expect("strings serialize"));
            header.push_str(&format!(
                ":{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{},{}]}}",
                dtype_name(*dtype),
                serde_json::to_string(shape).expect("numbers serialize"),
                offset,
                offset + size
            ));
            offset += size;
            sizes.push((name.clone(), size));
        }
        header.push('}');
        // Pad with spaces so the data starts 8-byte aligned, as the reference serializer does.
        while header.len() % 8 != 0 {
            header.push(' ');
        }
        let io = |source| SafetensorsError::Io {
            path: path.clone(),
            source,
        };
        let file = AtomicFile::create(&path).map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(header.as_bytes()).map_err(io)?;
        Ok(SafetensorsWriter {
            out,
            path,
            sizes,
            next: 0,
            written: 0,
        })
    }

    /// Append part of the current tensor's data; a tensor may come in several parts.
    pub fn write_part(&mut self, data: &[u8]) -> Result<(), SafetensorsError> {
        let Some((name, size)) = self.sizes.get(self.next) else {
            return Err(self.corrupt("more tensor data than tensors".into()));
        };
        if self.written + data.len() > *size {
            let what = format!(
                "tensor '{name}': {} bytes written, expected {size}",
                self.written + data.len()
            );
            return Err(self.corrupt(what));
        }
        self.written += data.len();
        if self.written == *size {
            self.next += 1;
            self.written = 0;
        }
        let path = self.path.clone();
        self.out
            .write_all(data)
            .map_err(|source| SafetensorsError::Io { path, source })
    }

    /// Append the whole data of the next tensor.
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<(), SafetensorsError> {
        match self.sizes.get(self.next) {
            Some((_, size)) if *size == data.len() && self.written == 0 => self.write_part(data),
            Some((name, size)) => {
                let what = format!("tensor '{name}': got {} bytes, expected {size}", data.len());
                Err(self.corrupt(what))
            }
            None => Err(self.corrupt("more tensor data than tensors".into())),
        }
    }

    /// Flush, sync and rename onto the target path.
    pub fn finish(self) -> Result<(), SafetensorsError> {
        if self.next != self.sizes.len() {
            let what = format!("only {} of {} tensors written", self.next, self.sizes.len());
            return Err(self.corrupt(what));
        }
        let path = self.path.clone();
        let io = |source| SafetensorsError::Io {
            path: path.clone(),
            source,
        };
        let file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.commit().map_err(io)
    }

    fn corrupt(&self, what: String) -> SafetensorsError {
        SafetensorsError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qforge-st-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writer_output_reads_back_and_matches_the_reference_serializer() {
        let d = tmp("rw");
        let p = d.join("a.safetensors");
        let a: Vec<u8> = (0..24u8).collect();
        let b: Vec<u8> = (0..8u8).map(|x| x * 3).collect();
        let specs = vec![
            ("b.weight".to_string(), Dtype::F32, vec![2, 3]),
            ("a.bias".to_string(), Dtype::BF16, vec![4]),
        ];
        let mut w = SafetensorsWriter::create(&p, &specs, None).unwrap();
        w.write_part(&a[..10]).unwrap();
        w.write_part(&a[10..]).unwrap();
        w.write_tensor(&b).unwrap();
        w.finish().unwrap();

        let f = SafetensorsFile::open(&p).unwrap();
        assert_eq!(f.tensors().len(), 2);
        let tb = f.tensor("b.weight").unwrap();
        assert_eq!(tb.shape, vec![2, 3]);
        assert_eq!(f.data(tb), &a[..]);
        let ta = f.tensor("a.bias").unwrap();
        assert_eq!(ta.dtype, Dtype::BF16);
        assert_eq!(f.data(ta), &b[..]);

        // The crate's own serializer must read our file identically.
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("b.weight").unwrap().data(), &a[..]);
        assert_eq!(
            (8 + u64::from_le_bytes(bytes[..8].try_into().unwrap())) % 8,
            0
        );
    }

    #[test]
    fn truncated_file_is_refused_with_its_name() {
        let d = tmp("trunc");
        let p = d.join("t.safetensors");
        let specs = vec![("x".to_string(), Dtype::F32, vec![4])];
        let mut w = SafetensorsWriter::create(&p, &specs, None).unwrap();
        w.write_tensor(&[0u8; 16]).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let err = SafetensorsFile::open(&p).err().unwrap().to_string();
        assert!(err.contains("t.safetensors"), "{err}");
    }

    #[test]
    fn short_tensor_write_is_refused_and_leaves_no_file() {
        let d = tmp("short");
        let p = d.join("s.safetensors");
        let specs = vec![("x".to_string(), Dtype::F16, vec![4])];
        let mut w = SafetensorsWriter::create(&p, &specs, None).unwrap();
        assert!(w.write_tensor(&[0u8; 6]).is_err());
        assert!(w.finish().is_err());
        assert!(!p.exists());
    }

    #[test]
    fn f16_and_bf16_convert_exactly() {
        let mut out = [0f32; 2];
        floats_to_f32(Dtype::F16, &[0x00, 0x3c, 0x01, 0x80], &mut out);
        assert_eq!(out[0], 1.0);
        assert_eq!(out[1], -(2f32.powi(-24)));
        floats_to_f32(Dtype::BF16, &[0x80, 0x3f, 0x00, 0xc0], &mut out);
        assert_eq!(out, [1.0, -2.0]);
    }
}
