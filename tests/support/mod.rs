//! What both test binaries (`tests/it`, `tests/gpu`) share, included by each through
//! `#[path = "../support/mod.rs"] mod support;`: where the golden files are, hashing, the golden
//! manifests, fresh temp dirs, the one seeded RNG ([`rng::Rng`]), the one synthetic-model builder
//! ([`synthetic`]) and the quantizer test data ([`quant_data`]).
// Each binary uses a different part of this module.
#![allow(dead_code)]

pub mod quant_data;
pub mod rng;
pub mod synthetic;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

/// `../shared` beside the checkout (override with QFORGE_SHARED).
pub fn shared() -> PathBuf {
    if let Ok(p) = std::env::var("QFORGE_SHARED") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// `rel` under the shared golden folder (made with llama.cpp; its README says how).
pub fn golden(rel: &str) -> PathBuf {
    shared().join("golden").join(rel)
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A manifest written by shared/tools/gguf_manifest.py.
pub struct Manifest {
    pub file_sha256: String,
    pub size: u64,
    pub json: serde_json::Value,
}

/// One tensor entry of a [`Manifest`].
pub struct ManifestTensor {
    pub name: String,
    pub ty: String,
    pub shape: Vec<u64>,
    pub offset: u64,
    pub sha256: String,
}

impl Manifest {
    /// The manifest at `rel` under the shared golden folder.
    pub fn load(rel: &str) -> Manifest {
        Manifest::load_path(&golden(rel))
    }

    /// The manifest at `path` (e.g. one under tests/data).
    pub fn load_path(path: &Path) -> Manifest {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        Manifest {
            file_sha256: json["file_sha256"].as_str().unwrap().to_string(),
            size: json["size"].as_u64().unwrap(),
            json,
        }
    }

    /// The tensors in file order.
    pub fn tensors(&self) -> Vec<ManifestTensor> {
        self.json["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| ManifestTensor {
                name: t["name"].as_str().unwrap().to_string(),
                ty: t["type"].as_str().unwrap().to_string(),
                shape: t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect(),
                offset: t["offset"].as_u64().unwrap(),
                sha256: t["sha256"].as_str().unwrap().to_string(),
            })
            .collect()
    }

    /// Keys in file order.
    pub fn keys(&self) -> Vec<String> {
        self.json["kv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| kv["key"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Compare a GGUF file we wrote with a manifest: on mismatch, panic with the list of tensors that
/// differ (name, types) so a failure says where to look.
pub fn assert_matches_manifest(out: &Path, m: &Manifest) {
    let bytes = std::fs::read(out).unwrap();
    if sha256_hex(&bytes) == m.file_sha256 {
        return;
    }
    let f = qforge::formats::gguf::GgufFile::open(out).unwrap();
    let mut diffs = Vec::new();
    let expected = m.tensors();
    if f.tensors.len() != expected.len() {
        diffs.push(format!(
            "{} tensors, expected {}",
            f.tensors.len(),
            expected.len()
        ));
    }
    for (t, e) in f.tensors.iter().zip(&expected) {
        let sha = sha256_hex(f.tensor_data(t));
        if t.name != e.name || t.ty.name() != e.ty || sha != e.sha256 {
            diffs.push(format!(
                "{} {} (expected {} {})",
                t.name, t.ty, e.name, e.ty
            ));
        }
    }
    let keys: Vec<String> = f.metadata.iter().map(|(k, _)| k.to_string()).collect();
    if keys != m.keys() {
        diffs.push(format!("keys {keys:?}\n expected {:?}", m.keys()));
    }
    panic!(
        "{} differs from the golden manifest (size {} vs {}): {} differences:\n  {}",
        out.display(),
        bytes.len(),
        m.size,
        diffs.len(),
        diffs.join("\n  ")
    );
}

/// A fresh temporary directory for one test. A counter keeps two calls apart even with the same
/// tag: every test of a binary shares one process id, and tags were only unique per file.
pub fn temp_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("qforge-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every file (recursively) under `dir`, as sorted relative paths.
pub fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                for f in list_files(&p) {
                    out.push(format!("{}/{f}", e.file_name().to_string_lossy()));
                }
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// `name` under tests/runtime_data (llama.cpp's recorded outputs and the texts they ran on).
pub fn runtime_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/runtime_data")
        .join(name)
}

/// Run the `qforge` binary with `args`.
pub fn qforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .output()
        .expect("running qforge")
}

/// Run the `qforge` binary with `args`, require success, return its stdout.
pub fn qforge_ok(args: &[&str]) -> String {
    let out = qforge(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "qforge {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// The value after `Final estimate: PPL = ` in `qforge perplexity`'s (or llama-perplexity's)
/// output.
pub fn final_ppl(stdout: &str) -> f64 {
    stdout
        .split("Final estimate: PPL = ")
        .nth(1)
        .unwrap_or_else(|| panic!("no PPL line in {stdout}"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
