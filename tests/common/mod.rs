//! Helpers shared by the integration tests: where the golden files are, hashing, manifests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// `../shared` beside the checkout (override with QFORGE_SHARED).
pub fn shared() -> PathBuf {
    if let Ok(p) = std::env::var("QFORGE_SHARED") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

pub fn golden(rel: &str) -> PathBuf {
    shared().join("golden").join(rel)
}

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

pub struct ManifestTensor {
    pub name: String,
    pub ty: String,
    pub shape: Vec<u64>,
    pub offset: u64,
    pub sha256: String,
}

impl Manifest {
    pub fn load(rel: &str) -> Manifest {
        let path = golden(rel);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        Manifest {
            file_sha256: json["file_sha256"].as_str().unwrap().to_string(),
            size: json["size"].as_u64().unwrap(),
            json,
        }
    }

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

/// A fresh temporary directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qforge-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Write `s` as GGUF, optionally without output.weight (tied embeddings) and with a
/// rope_freqs.weight tensor (llama3 frequency factors).
pub fn write_llama_variant(
    s: &qforge::runtime::synthetic::SyntheticLlama,
    path: &Path,
    tied: bool,
    rope_freqs: Option<&[f32]>,
) {
    let mut infos = Vec::new();
    let mut datas = Vec::new();
    for (i, (name, ne)) in s.tensors().into_iter().enumerate() {
        if tied && name == "output.weight" {
            continue;
        }
        let mut vals = s.values(i, ne.iter().product::<u64>() as usize);
        // Sharper attention than the generator's 0.02-scale weights give, so that positions
        // (RoPE) visibly move the logits.
        if name.contains("attn_q") || name.contains("attn_k") {
            vals.iter_mut().for_each(|v| *v *= 8.0);
        }
        let ty = if ne.len() == 1 {
            qforge::quant::GgmlType::F32
        } else {
            s.weight_type
        };
        let bytes: Vec<u8> = match ty {
            qforge::quant::GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => vals
                .iter()
                .flat_map(|v| qforge::quant::f32_to_f16(*v).to_le_bytes())
                .collect(),
        };
        infos.push((name, ty, ne));
        datas.push(bytes);
    }
    if let Some(ff) = rope_freqs {
        infos.push((
            "rope_freqs.weight".into(),
            qforge::quant::GgmlType::F32,
            vec![ff.len() as u64],
        ));
        datas.push(ff.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    let mut md = s.metadata();
    md.set(
        "llama.rope.freq_base",
        qforge::formats::gguf::Value::F32(500000.0),
    );
    let mut w = qforge::formats::gguf::GgufWriter::create(path, &md, &infos).unwrap();
    for d in &datas {
        w.write_tensor(d).unwrap();
    }
    w.finish().unwrap();
}
