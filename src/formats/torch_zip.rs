//! `torch.save` checkpoints (`pytorch_model.bin`, `model.pt`): the zip format of PyTorch ≥ 1.6.
//!
//! The archive holds `<prefix>/data.pkl` (the state dict as a pickle, read by the restricted
//! [`crate::formats::pickle`] reader, so a checkpoint cannot run code) and one record per storage,
//! `<prefix>/data/<key>`, stored uncompressed. Tensors are views of those records; a contiguous
//! view of a stored record is served straight from the memory map, anything else (strided views,
//! compressed records) is copied once into an unlinked scratch file's map. The result has the shape of a
//! safetensors file: name, dtype, shape, byte range in a map, in the pickle's key order (the
//! order `torch.load(...).keys()` gives, which is the order llama.cpp's converter visits).
//!
//! The legacy (pre-1.6, non-zip) format is refused with a clear message.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut};
use safetensors::Dtype;

use crate::formats::pickle::{self, PickleError, TensorRef, Value};

/// Errors reading a torch checkpoint; each names the file (and the tensor or record).
#[derive(Debug, thiserror::Error)]
pub enum TorchError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file (or directory) concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is a torch.save of the legacy (pre-1.6) format.
    #[error("{path}: legacy (pre-zip) torch.save format is not supported; re-save it with torch ≥ 1.6 or as safetensors")]
    Legacy {
        /// The file (or directory) concerned.
        path: PathBuf,
    },
    /// The zip archive is malformed or lacks what torch.save writes.
    #[error("{path}: not a valid torch.save archive: {what}")]
    Corrupt {
        /// The file (or directory) concerned.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The pickle was refused or malformed.
    #[error(transparent)]
    Pickle(#[from] PickleError),
    /// One entry of the state dict is not a usable tensor.
    #[error("{path}: tensor '{tensor}': {what}")]
    Tensor {
        /// The file (or directory) concerned.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        what: String,
    },
}

/// One tensor of a torch checkpoint: its byte range in [`TorchFile::map`].
#[derive(Clone, Debug)]
pub struct TorchTensor {
    /// Its name.
    pub name: String,
    /// The element type.
    pub dtype: Dtype,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Absolute byte offset of the (contiguous, little-endian) data in the map.
    pub start: usize,
    /// Bytes of the data.
    pub len: usize,
}

/// A torch checkpoint's tensors and the map that holds their bytes.
pub struct TorchFile {
    /// The file (or directory) concerned.
    pub path: PathBuf,
    /// The memory-mapped archive the tensors point into.
    pub map: Mmap,
    /// In the pickle's key order.
    pub tensors: Vec<TorchTensor>,
}

/// The dtype and element size of a typed storage class.
fn storage_dtype(storage_type: &str) -> Option<(Dtype, usize)> {
    Some(match storage_type {
        "FloatStorage" => (Dtype::F32, 4),
        "HalfStorage" => (Dtype::F16, 2),
        "BFloat16Storage" => (Dtype::BF16, 2),
        "DoubleStorage" => (Dtype::F64, 8),
        "LongStorage" => (Dtype::I64, 8),
        "IntStorage" => (Dtype::I32, 4),
        "ShortStorage" => (Dtype::I16, 2),
        "CharStorage" => (Dtype::I8, 1),
        "ByteStorage" => (Dtype::U8, 1),
        "BoolStorage" => (Dtype::BOOL, 1),
        _ => return None,
    })
}

/// Numbers the scratch files of one process.
static SCRATCH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Where one storage record's bytes are.
struct Record {
    /// Absolute offset in the file when stored uncompressed.
    stored_at: Option<usize>,
    index: usize,
    size: usize,
}

/// Is a view with these sizes/strides row-major contiguous? (Dimensions of size 1 may carry any
/// stride, as torch allows.)
fn is_contiguous(size: &[u64], stride: &[u64]) -> bool {
    let mut expect = 1u64;
    for (&n, &s) in size.iter().zip(stride).rev() {
        if n != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(n);
    }
    true
}

impl TorchFile {
    /// Open and index a `torch.save` zip archive.
    pub fn open(path: impl AsRef<Path>) -> Result<TorchFile, TorchError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| TorchError::Io {
            path: path.clone(),
            source,
        };
        let corrupt = |what: String| TorchError::Corrupt {
            path: path.clone(),
            what,
        };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: a read-only map; a file changed underneath us while mapped is outside what any
        // mmap-based reader can defend against.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        if !map.starts_with(b"PK\x03\x04") {
            // The legacy format is a sequence of pickles, starting with a PROTO opcode.
            if map.first() == Some(&0x80) {
                return Err(TorchError::Legacy { path });
            }
            return Err(corrupt("no zip signature".into()));
        }
        let mut zip = zip::ZipArchive::new(Cursor::new(&map[..]))
            .map_err(|e| corrupt(format!("zip: {e}")))?;
        let names: Vec<String> = zip
            .file_names()
            .map(|n| n.map(|n| n.to_string()))
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt(format!("zip: {e}")))?;
        let pkl: Vec<&String> = names
            .iter()
            .filter(|n| {
                n.strip_suffix("data.pkl").is_some_and(|p| {
                    p.is_empty() || (p.ends_with('/') && p.matches('/').count() == 1)
                })
            })
            .collect();
        let pkl_name = match pkl.as_slice() {
            [one] => (*one).clone(),
            [] => return Err(corrupt("no data.pkl record".into())),
            _ => return Err(corrupt("more than one data.pkl record".into())),
        };
        let prefix = pkl_name.strip_suffix("data.pkl").unwrap().to_string();
        if let Some(i) = zip.index_for_name(&format!("{prefix}byteorder")) {
            let mut order = String::new();
            let mut f = zip
                .by_index(i)
                .map_err(|e| corrupt(format!("byteorder: {e}")))?;
            f.by_ref()
                .take(16)
                .read_to_string(&mut order)
                .map_err(|e| corrupt(format!("byteorder: {e}")))?;
            if order.trim() != "little" {
                return Err(corrupt(format!(
                    "byte order '{}' (only little-endian checkpoints are read)",
                    order.trim()
                )));
            }
        }
        let pickle_bytes = {
            let mut f = zip
                .by_name(&pkl_name)
                .map_err(|e| corrupt(format!("{pkl_name}: {e}")))?;
            let mut v = Vec::new();
            // A state dict's pickle is small; bound it so a hostile size cannot exhaust memory.
            f.by_ref()
                .take(1 << 30)
                .read_to_end(&mut v)
                .map_err(|e| corrupt(format!("{pkl_name}: {e}")))?;
            v
        };
        let root = pickle::unpickle(&path, &pickle_bytes)?;
        let Value::Dict(entries) = root else {
            return Err(corrupt("data.pkl does not hold a dict of tensors".into()));
        };

        // Index the storage records each tensor needs.
        let mut records: std::collections::HashMap<String, Record> = Default::default();
        let mut views: Vec<(String, TensorRef, Dtype, usize)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Value::Str(name) = k else {
                return Err(corrupt("a state dict key is not a string".into()));
            };
            let bad = |what: String| TorchError::Tensor {
                path: path.clone(),
                tensor: name.clone(),
                what,
            };
            let Value::Tensor(t) = v else {
                return Err(bad("the value is not a tensor".into()));
            };
            let (dtype, esize) = storage_dtype(t.storage_type)
                .ok_or_else(|| bad(format!("unknown storage type {}", t.storage_type)))?;
            if !records.contains_key(&t.key) {
                let rec_name = format!("{prefix}data/{}", t.key);
                let index = zip
                    .index_for_name(&rec_name)
                    .ok_or_else(|| bad(format!("storage record '{rec_name}' is missing")))?;
                let f = zip
                    .by_index_raw(index)
                    .map_err(|e| bad(format!("storage record '{rec_name}': {e}")))?;
                let size = usize::try_from(f.size()).map_err(|_| bad("huge storage".into()))?;
                let stored_at = match f.compression() {
                    zip::CompressionMethod::Stored => f
                        .data_start()
                        .and_then(|s| usize::try_from(s).ok())
                        .filter(|&s| s.checked_add(size).is_some_and(|e| e <= map.len())),
                    _ => None,
                };
                if f.compression() == zip::CompressionMethod::Stored && stored_at.is_none() {
                    return Err(bad(format!(
                        "storage record '{rec_name}' runs past the end of the file"
                    )));
                }
                records.insert(
                    t.key.clone(),
                    Record {
                        stored_at,
                        index,
                        size,
                    },
                );
            }
            let rec = &records[&t.key];
            let need = t.storage_numel.checked_mul(esize as u64);
            if need != Some(rec.size as u64) {
                return Err(bad(format!(
                    "storage '{}' holds {} bytes, its type and length say {:?}",
                    t.key, rec.size, need
                )));
            }
            // The last element the view touches must lie inside the storage.
            let n: u64 = t
                .size
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad("huge shape".into()))?;
            if n > 0 {
                let last = t
                    .size
                    .iter()
                    .zip(&t.stride)
                    .try_fold(t.offset, |a, (&d, &s)| {
                        a.checked_add((d - 1).checked_mul(s)?)
                    })
                    .ok_or_else(|| bad("view overflows".into()))?;
                if last >= t.storage_numel {
                    return Err(bad(format!(
                        "view (offset {}, size {:?}, stride {:?}) reaches past its storage of {} elements",
                        t.offset, t.size, t.stride, t.storage_numel
                    )));
                }
            }
            views.push((name, t, dtype, esize));
        }

        let direct = views.iter().all(|(_, t, _, _)| {
            records[&t.key].stored_at.is_some() && is_contiguous(&t.size, &t.stride)
        });
        let shape_of = |t: &TensorRef| t.size.iter().map(|&d| d as usize).collect::<Vec<_>>();
        if direct {
            let tensors = views
                .into_iter()
                .map(|(name, t, dtype, esize)| {
                    let rec = &records[&t.key];
                    let n: usize = t.size.iter().product::<u64>() as usize;
                    TorchTensor {
                        name,
                        dtype,
                        shape: shape_of(&t),
                        start: rec.stored_at.unwrap() + t.offset as usize * esize,
                        len: n * esize,
                    }
                })
                .collect();
            drop(zip);
            return Ok(TorchFile { path, map, tensors });
        }

        // Some view is strided or some record compressed: gather every tensor contiguously into
        // an unlinked scratch file. A file mapping, not an anonymous one: readers release pages
        // with MADV_DONTNEED, which refaults a file's pages but would zero anonymous ones.
        let total: usize = views
            .iter()
            .map(|(_, t, _, e)| t.size.iter().product::<u64>() as usize * e)
            .sum();
        let scratch_path = std::env::temp_dir().join(format!(
            "qforge-torch-{}-{}.tmp",
            std::process::id(),
            SCRATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let scratch = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&scratch_path)
            .map_err(io)?;
        // Unlinked at once: the open file and its map keep the data alive, nothing is left behind.
        let _ = std::fs::remove_file(&scratch_path);
        scratch.set_len(total.max(1) as u64).map_err(io)?;
        // SAFETY: the file is private to this process (created and unlinked here).
        let mut gathered = unsafe { MmapMut::map_mut(&scratch) }.map_err(io)?;
        let mut loaded: std::collections::HashMap<String, Vec<u8>> = Default::default();
        let mut tensors = Vec::with_capacity(views.len());
        let mut at = 0usize;
        for (name, t, dtype, esize) in views {
            let rec = &records[&t.key];
            let storage: &[u8] = match rec.stored_at {
                Some(s) => &map[s..s + rec.size],
                None => {
                    if !loaded.contains_key(&t.key) {
                        let mut f = zip
                            .by_index(rec.index)
                            .map_err(|e| corrupt(format!("storage '{}': {e}", t.key)))?;
                        let mut v = Vec::with_capacity(rec.size);
                        f.by_ref()
                            .take(rec.size as u64)
                            .read_to_end(&mut v)
                            .map_err(|e| corrupt(format!("storage '{}': {e}", t.key)))?;
                        if v.len() != rec.size {
                            return Err(corrupt(format!("storage '{}' is short", t.key)));
                        }
                        loaded.insert(t.key.clone(), v);
                    }
                    &loaded[&t.key]
                }
            };
            let n: usize = t.size.iter().product::<u64>() as usize;
            let out = &mut gathered[at..at + n * esize];
            // Walk the view in row-major order.
            let mut idx = vec![0u64; t.size.len()];
            for e in 0..n {
                let src = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
                let s = src as usize * esize;
                out[e * esize..(e + 1) * esize].copy_from_slice(&storage[s..s + esize]);
                for d in (0..idx.len()).rev() {
                    idx[d] += 1;
                    if idx[d] < t.size[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
            tensors.push(TorchTensor {
                name,
                dtype,
                shape: shape_of(&t),
                start: at,
                len: n * esize,
            });
            at += n * esize;
        }
        let map = gathered.make_read_only().map_err(io)?;
        Ok(TorchFile { path, map, tensors })
    }
}
