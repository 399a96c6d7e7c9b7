//! Importance matrices in llama.cpp's (0c1e57098) two formats, read the way llama-quantize reads
//! them and written the way llama-imatrix writes them.
//!
//! - GGUF (`general.type = "imatrix"`): per weight tensor `<name>.in_sum2` (F32, Σx² per input
//!   column, one row per expert) and `<name>.counts` (F32, tokens seen per expert), plus
//!   `imatrix.datasets`, `imatrix.chunk_count`, `imatrix.chunk_size`.
//! - Legacy `.dat`: i32 entry count; per entry i32 name length, name, i32 ncall, i32 nval,
//!   nval f32 holding (Σx²/count)·ncall; then optionally i32 chunk count, i32 length and the
//!   dataset name.
//!
//! [`ImatrixFile`] is a file as stored (`common_imatrix_load`), [`ImportanceWeights`] what
//! quantization uses (quantize.cpp `load_imatrix` / `prepare_imatrix`), [`ImatrixStats`] the
//! raw sums llama-imatrix accumulates and saves (`IMatrixCollector`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::formats::atomic::AtomicFile;
use crate::formats::gguf::{
    trim_dims, GgufError, GgufFile, GgufWriter, Metadata, Value, ValueType, GGUF_MAGIC,
};
use crate::ggml::GgmlType;

/// Key listing the datasets the matrix was collected on (array of strings).
pub const KEY_DATASETS: &str = "imatrix.datasets";
/// Key holding the number of chunks processed (u32).
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
/// Key holding the tokens per chunk (u32).
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";
const SUFFIX_SUMS: &str = ".in_sum2";
const SUFFIX_COUNTS: &str = ".counts";

/// Errors reading, using or writing an importance matrix; each names the file and, where there
/// is one, the entry.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A GGUF imatrix the GGUF layer refused (truncated, corrupt header, …).
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A legacy file that ends inside a field.
    #[error("{}: truncated: {what} at byte {offset} runs past the end of the file ({len} bytes)", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Which field.
        what: String,
        /// Where that field starts.
        offset: u64,
        /// The file's length in bytes.
        len: u64,
    },
    /// A field holding an impossible value (negative length, name not UTF-8, …).
    #[error("{}: corrupt: {what}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Which field and its impossible value.
        what: String,
    },
    /// A file without a single entry (llama.cpp: "no data in file").
    #[error("{}: the importance matrix has no entries", path.display())]
    NoEntries {
        /// The file.
        path: PathBuf,
    },
    /// A GGUF imatrix lacking one of `imatrix.datasets`, `imatrix.chunk_count`,
    /// `imatrix.chunk_size` (llama-quantize refuses it).
    #[error("{}: missing imatrix metadata (imatrix.datasets, imatrix.chunk_count and imatrix.chunk_size are required)", path.display())]
    MissingMetadata {
        /// The file.
        path: PathBuf,
    },
    /// A metadata key of the wrong type.
    #[error("{}: key '{key}' must be {expected}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The type it must have, in words.
        expected: &'static str,
    },
    /// An entry with `.in_sum2` but no `.counts`, or the reverse.
    #[error("{}: entry '{entry}' has {} but no {}", path.display(), if *has_sums { ".in_sum2" } else { ".counts" }, if *has_sums { ".counts" } else { ".in_sum2" })]
    MismatchedPair {
        /// The file.
        path: PathBuf,
        /// The entry (tensor name).
        entry: String,
        /// Whether it is the `.in_sum2` half that is present.
        has_sums: bool,
    },
    /// `.in_sum2` and `.counts` must be F32.
    #[error("{}: entry '{entry}': tensor '{tensor}' is {ty}, not F32", path.display())]
    NotF32 {
        /// The file.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// The GGUF tensor (`<entry>.in_sum2` or `<entry>.counts`).
        tensor: String,
        /// Its type.
        ty: GgmlType,
    },
    /// Counts that cannot describe the sums: negative or non-finite, or a number of values that
    /// is not a multiple of the number of counts.
    #[error("{}: entry '{entry}': bad counts: {why}", path.display())]
    BadCounts {
        /// The file.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// What is wrong with the counts.
        why: String,
    },
    /// A NaN or infinite importance value (llama-quantize refuses the whole matrix).
    #[error("{}: entry '{entry}' holds the non-finite value {value} at index {index}", path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// Index of the value within the entry.
        index: usize,
        /// The value.
        value: f32,
    },
    /// An entry whose length is not the tensor's columns × experts.
    #[error("{}: entry '{entry}' has {len} values but tensor '{tensor}' needs {expected}", path.display())]
    WrongLength {
        /// The imatrix file.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// The model tensor it is applied to.
        tensor: String,
        /// Values in the entry.
        len: usize,
        /// Values the tensor needs (columns × experts).
        expected: u64,
    },
    /// `--include-weights` and `--exclude-weights` together.
    #[error("--include-weights and --exclude-weights cannot be used together")]
    IncludeAndExclude,
    /// Matrices to merge whose entries disagree in size.
    #[error("{}: entry '{entry}': {why}", path.display())]
    MergeMismatch {
        /// The file being merged in.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// How the sizes disagree.
        why: String,
    },
    /// A chunk size (`n_ctx / n_parallel`) that is not positive.
    #[error("chunk size {0} is not positive")]
    BadChunkSize(i32),
}

/// Which format a file was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImatrixFormat {
    /// The GGUF imatrix format (`general.type = "imatrix"`), what llama-imatrix writes by default.
    Gguf,
    /// The legacy binary format: an entry count, then per entry its name, call count and values,
    /// then an optional trailer (chunk count, dataset name).
    Legacy,
}

/// One entry as stored (`common_imatrix_entry`).
#[derive(Clone, Debug, PartialEq)]
pub struct ImatrixEntry {
    /// GGUF: raw Σx² per column, experts one after another. Legacy: (Σx²/count)·ncall.
    pub sums: Vec<f32>,
    /// GGUF: tokens per expert, the stored f32 rounded half away from zero (`std::lround`).
    /// Legacy: `[ncall]`.
    pub counts: Vec<i64>,
}

/// An importance matrix file as stored (`common_imatrix`).
#[derive(Clone, Debug)]
pub struct ImatrixFile {
    /// The file this was read from.
    pub path: PathBuf,
    /// The format it was stored in.
    pub format: ImatrixFormat,
    /// By name (sorted, like the std::map it reproduces).
    pub entries: BTreeMap<String, ImatrixEntry>,
    /// GGUF `imatrix.datasets`, or the legacy trailer's dataset name. Legacy names that are not
    /// UTF-8 are converted lossily.
    pub datasets: Vec<String>,
    /// `imatrix.chunk_count` or the legacy trailer's chunk count (0 when absent).
    pub chunk_count: i32,
    /// `imatrix.chunk_size` (0 when absent, always 0 for legacy files).
    pub chunk_size: i32,
    /// All three `imatrix.*` keys are present (GGUF only).
    pub has_metadata: bool,
}

impl ImatrixFile {
    /// Read `path`: GGUF if it starts with the GGUF magic, else the legacy format (llama.cpp
    /// tries GGUF and falls back to legacy on any failure; deciding by the magic keeps a
    /// damaged GGUF file's real error).
    pub fn open(path: impl AsRef<Path>) -> Result<ImatrixFile, ImatrixError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ImatrixError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if bytes.starts_with(GGUF_MAGIC) {
            drop(bytes);
            Self::read_gguf(path)
        } else {
            Self::parse_legacy(path, &bytes)
        }
    }

    fn read_gguf(path: &Path) -> Result<ImatrixFile, ImatrixError> {
        let g = GgufFile::open(path)?;
        let p = || path.to_path_buf();
        if g.tensors.is_empty() {
            return Err(ImatrixError::NoEntries { path: p() });
        }
        let md = &g.metadata;
        let mut datasets = Vec::new();
        if let Some(Value::Array(ValueType::Str, items)) = md.get(KEY_DATASETS) {
            datasets = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
        }
        let u32_key = |key: &str| -> Result<Option<i32>, ImatrixError> {
            match md.get(key) {
                None => Ok(None),
                // llama.cpp reads it as u32 into an int32_t.
                Some(Value::U32(v)) => Ok(Some(*v as i32)),
                Some(_) => Err(ImatrixError::BadKey {
                    path: p(),
                    key: key.to_string(),
                    expected: "a u32",
                }),
            }
        };
        let chunk_count = u32_key(KEY_CHUNK_COUNT)?;
        let chunk_size = u32_key(KEY_CHUNK_SIZE)?;
        let has_metadata =
            md.get(KEY_DATASETS).is_some() && chunk_count.is_some() && chunk_size.is_some();

        // Pair `<name>.in_sum2` with `<name>.counts`; other tensors are ignored.
        let mut pairs: BTreeMap<String, (Option<usize>, Option<usize>)> = BTreeMap::new();
        for (i, t) in g.tensors.iter().enumerate() {
            if let Some(name) = t.name.strip_suffix(SUFFIX_SUMS) {
                pairs.entry(name.to_string()).or_default().0 = Some(i);
            } else if let Some(name) = t.name.strip_suffix(SUFFIX_COUNTS) {
                pairs.entry(name.to_string()).or_default().1 = Some(i);
            }
        }
        let mut entries = BTreeMap::new();
        for (name, pair) in pairs {
            let (Some(si), Some(ci)) = pair else {
                return Err(ImatrixError::MismatchedPair {
                    path: p(),
                    entry: name,
                    has_sums: pair.0.is_some(),
                });
            };
            let floats = |i: usize| -> Result<Vec<f32>, ImatrixError> {
                let t = &g.tensors[i];
                if t.ty != GgmlType::F32 {
                    return Err(ImatrixError::NotF32 {
                        path: p(),
                        entry: name.clone(),
                        tensor: t.name.clone(),
                        ty: t.ty,
                    });
                }
                Ok(f32s(g.tensor_data(t)))
            };
            let sums = floats(si)?;
            let raw_counts = floats(ci)?;
            let bad = |why: String| ImatrixError::BadCounts {
                path: p(),
                entry: name.clone(),
                why,
            };
            let mut counts = Vec::with_capacity(raw_counts.len());
            for (j, &c) in raw_counts.iter().enumerate() {
                if !c.is_finite() || c < 0.0 {
                    return Err(bad(format!("count {j} is {c}")));
                }
                counts.push((c as f64).round() as i64);
            }
            if sums.len() % counts.len() != 0 {
                return Err(bad(format!(
                    "{} values do not split into {} experts",
                    sums.len(),
                    counts.len()
                )));
            }
            entries.insert(name, ImatrixEntry { sums, counts });
        }
        Ok(ImatrixFile {
            path: p(),
            format: ImatrixFormat::Gguf,
            entries,
            datasets,
            chunk_count: chunk_count.unwrap_or(0),
            chunk_size: chunk_size.unwrap_or(0),
            has_metadata,
        })
    }

    /// Parse a legacy `.dat` file (`common_imatrix_load_legacy`), checking every length.
    pub fn parse_legacy(path: &Path, bytes: &[u8]) -> Result<ImatrixFile, ImatrixError> {
        let mut r = LegacyReader {
            path,
            bytes,
            pos: 0,
        };
        let n_entries = r.i32("entry count")?;
        if n_entries < 1 {
            return Err(ImatrixError::NoEntries {
                path: path.to_path_buf(),
            });
        }
        let mut entries = BTreeMap::new();
        for i in 0..n_entries {
            let len = r.i32(&format!("name length of entry {}", i + 1))?;
            let len = r.length(len, &format!("name length of entry {}", i + 1))?;
            let raw = r.take(len, &format!("name of entry {}", i + 1))?;
            let name = c_string(raw);
            let name = String::from_utf8(name.to_vec()).map_err(|_| ImatrixError::Corrupt {
                path: path.to_path_buf(),
                what: format!("name of entry {} is not UTF-8", i + 1),
            })?;
            let ncall = r.i32(&format!("call count of entry '{name}'"))?;
            if ncall < 0 {
                return Err(ImatrixError::BadCounts {
                    path: path.to_path_buf(),
                    entry: name.clone(),
                    why: format!("call count {ncall} is negative"),
                });
            }
            let nval = r.i32(&format!("value count of entry '{name}'"))?;
            if nval < 1 {
                return Err(ImatrixError::Corrupt {
                    path: path.to_path_buf(),
                    what: format!("entry '{name}' has {nval} values"),
                });
            }
            let data = r.take(nval as usize * 4, &format!("values of entry '{name}'"))?;
            // A repeated name replaces the earlier entry, as the std::map does.
            entries.insert(
                name,
                ImatrixEntry {
                    sums: f32s(data),
                    counts: vec![ncall as i64],
                },
            );
        }
        // The trailer is optional; when present writers always put all of it, so a partial
        // trailer means a damaged file.
        let mut chunk_count = 0;
        let mut datasets = Vec::new();
        if r.pos < bytes.len() {
            chunk_count = r.i32("chunk count")?;
            let len = r.i32("dataset name length")?;
            if len > 0 {
                let raw = r.take(len as usize, "dataset name")?;
                datasets.push(String::from_utf8_lossy(c_string(raw)).into_owned());
            }
        }
        Ok(ImatrixFile {
            path: path.to_path_buf(),
            format: ImatrixFormat::Legacy,
            entries,
            datasets,
            chunk_count,
            chunk_size: 0,
            has_metadata: false,
        })
    }
}

/// The bytes up to the first NUL (names are read back as C strings).
fn c_string(raw: &[u8]) -> &[u8] {
    raw.iter()
        .position(|&b| b == 0)
        .map_or(raw, |end| &raw[..end])
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

struct LegacyReader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> LegacyReader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ImatrixError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.bytes.len() => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(ImatrixError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                offset: self.pos as u64,
                len: self.bytes.len() as u64,
            }),
        }
    }

    fn i32(&mut self, what: &str) -> Result<i32, ImatrixError> {
        Ok(i32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn length(&self, v: i32, what: &str) -> Result<usize, ImatrixError> {
        usize::try_from(v).map_err(|_| ImatrixError::Corrupt {
            path: self.path.to_path_buf(),
            what: format!("{what} is {v}"),
        })
    }
}

/// Per-tensor importance weights as llama-quantize uses them, with what it records about them.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportanceWeights {
    /// The file they came from (for messages).
    pub path: PathBuf,
    /// Weights by tensor name: `ne0` per expert, experts one after another.
    pub entries: BTreeMap<String, Vec<f32>>,
    /// Datasets named by the file (the first goes to `quantize.imatrix.dataset`).
    pub datasets: Vec<String>,
    /// Chunks the matrix was computed on (`quantize.imatrix.chunks_count` when positive).
    pub chunk_count: i32,
}

impl ImportanceWeights {
    /// Read a file and compute its weights (quantize.cpp `load_imatrix`).
    pub fn load(path: impl AsRef<Path>) -> Result<ImportanceWeights, ImatrixError> {
        Self::from_file(&ImatrixFile::open(path)?)
    }

    /// The weights of a file (quantize.cpp `load_imatrix`). GGUF: in_sum2 / count per expert,
    /// all 1 for an expert with count 0. Legacy: the stored values / ncall, or the stored values
    /// themselves when ncall ≤ 0. A GGUF file without the `imatrix.*` keys is refused.
    pub fn from_file(f: &ImatrixFile) -> Result<ImportanceWeights, ImatrixError> {
        if f.format == ImatrixFormat::Gguf && !f.has_metadata {
            return Err(ImatrixError::MissingMetadata {
                path: f.path.clone(),
            });
        }
        let mut entries = BTreeMap::new();
        for (name, e) in &f.entries {
            let weights = match f.format {
                ImatrixFormat::Gguf => {
                    if e.counts.is_empty() || e.sums.len() % e.counts.len() != 0 {
                        return Err(ImatrixError::BadCounts {
                            path: f.path.clone(),
                            entry: name.clone(),
                            why: format!(
                                "{} values do not split into {} experts",
                                e.sums.len(),
                                e.counts.len()
                            ),
                        });
                    }
                    let n_per_expert = (e.sums.len() / e.counts.len()).max(1);
                    let mut w = Vec::with_capacity(e.sums.len());
                    for (sums, &count) in e.sums.chunks_exact(n_per_expert).zip(&e.counts) {
                        let count = count as f32;
                        if count > 0.0 {
                            w.extend(sums.iter().map(|&s| s / count));
                        } else {
                            w.extend(std::iter::repeat_n(1.0f32, sums.len()));
                        }
                    }
                    w
                }
                ImatrixFormat::Legacy => {
                    let ncall = e.counts.first().copied().unwrap_or(0);
                    if ncall > 0 {
                        let ncall = ncall as f32;
                        e.sums.iter().map(|&s| s / ncall).collect()
                    } else {
                        e.sums.clone()
                    }
                }
            };
            entries.insert(name.clone(), weights);
        }
        Ok(ImportanceWeights {
            path: f.path.clone(),
            entries,
            datasets: f.datasets.clone(),
            chunk_count: f.chunk_count,
        })
    }

    /// `--exclude-weights` drops entries whose name contains any of `exclude`;
    /// `--include-weights` keeps only entries whose name contains one of `include`
    /// (quantize.cpp `prepare_imatrix`). Both at once are refused.
    pub fn filter(&mut self, include: &[String], exclude: &[String]) -> Result<(), ImatrixError> {
        if !include.is_empty() && !exclude.is_empty() {
            return Err(ImatrixError::IncludeAndExclude);
        }
        if !exclude.is_empty() {
            self.entries
                .retain(|name, _| !exclude.iter().any(|x| name.contains(x.as_str())));
        }
        if !include.is_empty() {
            self.entries
                .retain(|name, _| include.iter().any(|x| name.contains(x.as_str())));
        }
        Ok(())
    }

    /// The entry count llama-quantize records (`quantize.imatrix.entries_count`): entries left
    /// after filtering.
    pub fn entries_count(&self) -> usize {
        self.entries.len()
    }

    /// Whether the matrix has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Refuse NaN and infinities anywhere (llama-quantize checks the filtered matrix).
    pub fn check_finite(&self) -> Result<(), ImatrixError> {
        for (name, w) in &self.entries {
            if let Some((index, &value)) = w.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ImatrixError::NonFinite {
                    path: self.path.clone(),
                    entry: name.clone(),
                    index,
                    value,
                });
            }
        }
        Ok(())
    }

    /// The weights for quantizing tensor `tensor` (shape `ne`), looked up as `entry` (the
    /// tensor's name, or its pre-pruning name). `None` when there is no entry, or for the token
    /// embeddings when the length is wrong (llama-quantize then goes on without); a wrong
    /// length is an error for every other tensor. The slice holds `ne[0]` weights per expert:
    /// rows of expert `e` use `[e * ne[0] .. (e + 1) * ne[0]]`.
    pub fn for_tensor(
        &self,
        entry: &str,
        tensor: &str,
        ne: &[u64],
    ) -> Result<Option<&[f32]>, ImatrixError> {
        let Some(w) = self.entries.get(entry) else {
            return Ok(None);
        };
        let expected = ne.first().copied().unwrap_or(1) * ne.get(2).copied().unwrap_or(1);
        if w.len() as u64 == expected {
            return Ok(Some(w));
        }
        if tensor == "token_embd.weight" || tensor == "per_layer_token_embd.weight" {
            return Ok(None);
        }
        Err(ImatrixError::WrongLength {
            path: self.path.clone(),
            entry: entry.to_string(),
            tensor: tensor.to_string(),
            len: w.len(),
            expected,
        })
    }

    /// The keys llama-quantize adds for an imatrix, in order, as `--override-kv` values (so
    /// they come after the user's overrides): the file argument and first dataset (each cut to
    /// 127 bytes by quantize.cpp's fixed buffer; we cut at a character boundary), the entry
    /// count, and the chunk count when positive. Integers are stored as u32.
    pub fn quantize_kv(&self, file_arg: &str) -> Vec<(String, Value)> {
        let mut kv = vec![(
            "quantize.imatrix.file".to_string(),
            Value::Str(cut_to_127_bytes(file_arg)),
        )];
        if let Some(first) = self.datasets.first() {
            kv.push((
                "quantize.imatrix.dataset".to_string(),
                Value::Str(cut_to_127_bytes(first)),
            ));
        }
        kv.push((
            "quantize.imatrix.entries_count".to_string(),
            Value::U32(self.entries.len() as u32),
        ));
        if self.chunk_count > 0 {
            kv.push((
                "quantize.imatrix.chunks_count".to_string(),
                Value::U32(self.chunk_count as u32),
            ));
        }
        kv
    }
}

fn cut_to_127_bytes(s: &str) -> String {
    let mut end = s.len().min(127);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Load, filter and check an imatrix as llama-quantize does before quantizing: `None` when no
/// entry is left after filtering (llama-quantize then runs without one, adding no keys).
pub fn prepare(
    path: impl AsRef<Path>,
    include: &[String],
    exclude: &[String],
) -> Result<Option<ImportanceWeights>, ImatrixError> {
    if !include.is_empty() && !exclude.is_empty() {
        return Err(ImatrixError::IncludeAndExclude);
    }
    let mut w = ImportanceWeights::load(path)?;
    w.filter(include, exclude)?;
    if w.is_empty() {
        return Ok(None);
    }
    w.check_finite()?;
    Ok(Some(w))
}

/// Raw statistics of one weight tensor, as llama-imatrix accumulates them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsEntry {
    /// Σx² per input column, experts one after another.
    pub values: Vec<f32>,
    /// Tokens seen per expert.
    pub counts: Vec<i64>,
}

/// What llama-imatrix saves (`IMatrixCollector`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImatrixStats {
    /// Accumulated statistics by tensor name (sorted).
    pub entries: BTreeMap<String, StatsEntry>,
    /// Every dataset to record, in order: those of merged matrices, then the prompt file.
    pub datasets: Vec<String>,
    /// Chunks processed (`m_last_chunk`).
    pub chunk_count: i32,
    /// Tokens per chunk (`n_ctx / n_parallel`).
    pub chunk_size: i32,
}

impl ImatrixStats {
    /// Empty statistics for chunks of `chunk_size` tokens.
    pub fn new(chunk_size: i32) -> ImatrixStats {
        ImatrixStats {
            chunk_size,
            ..Default::default()
        }
    }

    fn checked_chunk_size(&self) -> Result<i64, ImatrixError> {
        if self.chunk_size <= 0 {
            return Err(ImatrixError::BadChunkSize(self.chunk_size));
        }
        Ok(self.chunk_size as i64)
    }

    /// Entries with data, in name order, checked to split evenly into experts.
    fn stored_entries(
        &self,
        path: &Path,
    ) -> Result<Vec<(&String, &StatsEntry, usize)>, ImatrixError> {
        let mut out = Vec::new();
        for (name, e) in &self.entries {
            if e.values.is_empty() || e.counts.is_empty() {
                continue;
            }
            if e.values.len() % e.counts.len() != 0 {
                return Err(ImatrixError::BadCounts {
                    path: path.to_path_buf(),
                    entry: name.clone(),
                    why: format!(
                        "{} values do not split into {} experts",
                        e.values.len(),
                        e.counts.len()
                    ),
                });
            }
            out.push((name, e, e.values.len() / e.counts.len()));
        }
        Ok(out)
    }

    /// Write the GGUF format (`IMatrixCollector::save_imatrix`): every entry, even with partial
    /// data; shapes written with trailing 1s dropped, as gguf.cpp does.
    pub fn write_gguf(&self, path: impl AsRef<Path>) -> Result<(), ImatrixError> {
        let path = path.as_ref();
        let mut md = Metadata::new();
        md.set("general.type", Value::Str("imatrix".into()));
        md.set(
            KEY_DATASETS,
            Value::Array(
                ValueType::Str,
                self.datasets
                    .iter()
                    .map(|d| Value::Str(d.clone()))
                    .collect(),
            ),
        );
        md.set(KEY_CHUNK_COUNT, Value::U32(self.chunk_count as u32));
        md.set(KEY_CHUNK_SIZE, Value::U32(self.chunk_size as u32));
        let stored = self.stored_entries(path)?;
        let mut infos = Vec::with_capacity(2 * stored.len());
        for (name, e, per_expert) in &stored {
            let n_mat = e.counts.len() as u64;
            infos.push((
                format!("{name}{SUFFIX_SUMS}"),
                GgmlType::F32,
                trim_dims(&[*per_expert as u64, n_mat]),
            ));
            infos.push((
                format!("{name}{SUFFIX_COUNTS}"),
                GgmlType::F32,
                trim_dims(&[1, n_mat]),
            ));
        }
        let mut w = GgufWriter::create(path, &md, &infos)?;
        for (_, e, _) in &stored {
            w.write_tensor(&f32_bytes(e.values.iter().copied()))?;
            w.write_tensor(&f32_bytes(e.counts.iter().map(|&c| c as f32)))?;
        }
        w.finish()?;
        Ok(())
    }

    /// Write the legacy format (`IMatrixCollector::save_imatrix_legacy`): entries with no data
    /// at all are skipped; each stores ncall = ⌈max count / chunk size⌉ and
    /// (Σx² / count) · ncall, with 1 for experts never seen; the trailer holds the chunk count
    /// and the last dataset (empty when there is none).
    pub fn write_legacy(&self, path: impl AsRef<Path>) -> Result<(), ImatrixError> {
        let path = path.as_ref();
        let chunk_size = self.checked_chunk_size()?;
        let stored: Vec<_> = self
            .stored_entries(path)?
            .into_iter()
            .filter(|(_, e, _)| e.counts.iter().any(|&c| c != 0))
            .collect();
        let mut out = Vec::new();
        out.extend_from_slice(&(stored.len() as i32).to_le_bytes());
        for (name, e, per_expert) in &stored {
            out.extend_from_slice(&(name.len() as i32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            let max_count = e.counts.iter().copied().max().unwrap_or(0);
            // Ceiling division, so that a little data never stores ncall 0.
            let ncall = ((max_count + chunk_size - 1) / chunk_size) as i32;
            out.extend_from_slice(&ncall.to_le_bytes());
            out.extend_from_slice(&(e.values.len() as i32).to_le_bytes());
            for (i, &v) in e.values.iter().enumerate() {
                let mut count = e.counts[i / per_expert] as f32;
                let mut value = v;
                if count == 0.0 {
                    value = 1.0;
                    count = 1.0;
                }
                out.extend_from_slice(&((value / count) * ncall as f32).to_le_bytes());
            }
        }
        out.extend_from_slice(&self.chunk_count.to_le_bytes());
        let dataset = self.datasets.last().map_or("", String::as_str);
        out.extend_from_slice(&(dataset.len() as i32).to_le_bytes());
        out.extend_from_slice(dataset.as_bytes());

        let io = |source| ImatrixError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = AtomicFile::create(path).map_err(io)?;
        f.write_all(&out).map_err(io)?;
        f.commit().map_err(io)
    }

    /// Add a stored matrix to these statistics (`IMatrixCollector::load_imatrix`, for
    /// llama-imatrix `--in-file`): GGUF sums and counts add up as they are; legacy values are
    /// turned back into sums by multiplying by the chunk size. The datasets are appended and
    /// the chunk count becomes the largest count over the chunk size.
    pub fn merge_file(&mut self, f: &ImatrixFile) -> Result<(), ImatrixError> {
        let chunk_size = self.checked_chunk_size()?;
        let mismatch = |entry: &str, why: String| ImatrixError::MergeMismatch {
            path: f.path.clone(),
            entry: entry.to_string(),
            why,
        };
        for (name, loaded) in &f.entries {
            let e = self.entries.entry(name.clone()).or_default();
            match f.format {
                ImatrixFormat::Legacy => {
                    if e.values.is_empty() {
                        e.values = vec![0.0; loaded.sums.len()];
                        e.counts = vec![0];
                    } else if e.values.len() != loaded.sums.len() {
                        return Err(mismatch(
                            name,
                            format!("{} values, expected {}", loaded.sums.len(), e.values.len()),
                        ));
                    }
                    let scale = chunk_size as f32;
                    for (v, &s) in e.values.iter_mut().zip(&loaded.sums) {
                        *v += s * scale;
                    }
                    let ncall = loaded.counts.first().copied().unwrap_or(0);
                    for c in e.counts.iter_mut() {
                        *c += ncall * chunk_size;
                    }
                }
                ImatrixFormat::Gguf => {
                    if e.values.is_empty() {
                        e.values = vec![0.0; loaded.sums.len()];
                    } else if e.values.len() != loaded.sums.len() {
                        return Err(mismatch(
                            name,
                            format!(
                                "mismatched sums size: {} != {}",
                                loaded.sums.len(),
                                e.values.len()
                            ),
                        ));
                    }
                    if e.counts.is_empty() {
                        e.counts = vec![0; loaded.counts.len()];
                    } else if e.counts.len() == 1 && loaded.counts.len() > 1 {
                        // A single (legacy) count stands for every expert.
                        e.counts = vec![e.counts[0]; loaded.counts.len()];
                    } else if e.counts.len() != loaded.counts.len() {
                        return Err(mismatch(
                            name,
                            format!(
                                "mismatched counts size: {} != {}",
                                loaded.counts.len(),
                                e.counts.len()
                            ),
                        ));
                    }
                    for (v, &s) in e.values.iter_mut().zip(&loaded.sums) {
                        *v += s;
                    }
                    for (c, &n) in e.counts.iter_mut().zip(&loaded.counts) {
                        *c += n;
                    }
                }
            }
        }
        self.datasets.extend(f.datasets.iter().cloned());
        let max_count = self
            .entries
            .values()
            .flat_map(|e| e.counts.iter().copied())
            .fold(0i64, i64::max);
        self.chunk_count = (max_count / chunk_size) as i32;
        Ok(())
    }
}

fn f32_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(f32::to_le_bytes).collect()
}
