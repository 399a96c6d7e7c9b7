//! Importance matrices: the golden GGUF and legacy files give the same weights, the partial one
//! lacks its entry, both writers round-trip, filtering and lookups behave as llama-quantize's,
//! and damaged files are refused with the file and entry named.

use std::path::{Path, PathBuf};

use crate::support::{golden, temp_dir};
use qforge::formats::gguf::{GgufFile, GgufWriter, Metadata, Value, ValueType};
use qforge::formats::imatrix::{
    prepare, ImatrixError, ImatrixFile, ImatrixFormat, ImatrixStats, ImportanceWeights, StatsEntry,
};
use qforge::quant::GgmlType;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same_weights(a: &ImportanceWeights, b: &ImportanceWeights) {
    assert_eq!(
        a.entries.keys().collect::<Vec<_>>(),
        b.entries.keys().collect::<Vec<_>>()
    );
    for (name, wa) in &a.entries {
        assert_eq!(bits(wa), bits(&b.entries[name]), "entry {name}");
    }
}

#[test]
fn golden_gguf_and_dat_give_identical_weights() {
    for stem in ["imatrix", "imatrix-partial", "tiny-imatrix"] {
        let g = ImportanceWeights::load(golden(&format!("{stem}.gguf"))).unwrap();
        let d = ImportanceWeights::load(golden(&format!("{stem}.dat"))).unwrap();
        assert_same_weights(&g, &d);
        assert_eq!(g.datasets, vec!["qforge-golden-calibration".to_string()]);
        assert_eq!(d.datasets, g.datasets);
        assert_eq!((g.chunk_count, d.chunk_count), (10, 10));
        g.check_finite().unwrap();
    }
    let g = ImatrixFile::open(golden("imatrix.gguf")).unwrap();
    assert_eq!(g.format, ImatrixFormat::Gguf);
    assert!(g.has_metadata);
    assert_eq!(g.chunk_size, 512);
    let d = ImatrixFile::open(golden("imatrix.dat")).unwrap();
    assert_eq!(d.format, ImatrixFormat::Legacy);
    assert_eq!(d.chunk_size, 0);
}

#[test]
fn gguf_weights_are_sums_over_counts() {
    // Checked against the raw tensors of the golden file, independently of the loader.
    let raw = GgufFile::open(golden("imatrix.gguf")).unwrap();
    let w = ImportanceWeights::load(golden("imatrix.gguf")).unwrap();
    let floats = |name: &str| -> Vec<f32> {
        let t = raw.tensor(name).unwrap();
        raw.tensor_data(t)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let mut n = 0;
    for (name, weights) in &w.entries {
        let sums = floats(&format!("{name}.in_sum2"));
        let counts = floats(&format!("{name}.counts"));
        assert_eq!(counts.len(), 1);
        let expected: Vec<f32> = sums.iter().map(|s| s / counts[0].round()).collect();
        assert_eq!(bits(weights), bits(&expected), "{name}");
        n += 1;
    }
    assert_eq!(n, raw.tensors.len() / 2);
    // "some columns 0": a zero sum gives a zero weight, not 1.
    assert!(w.entries.values().flatten().any(|&x| x == 0.0));
}

#[test]
fn the_partial_matrix_lacks_const() {
    for ext in ["gguf", "dat"] {
        let p = ImportanceWeights::load(golden(&format!("imatrix-partial.{ext}"))).unwrap();
        let full = ImportanceWeights::load(golden(&format!("imatrix.{ext}"))).unwrap();
        assert!(!p.entries.contains_key("blk.0.const.weight"));
        assert!(full.entries.contains_key("blk.0.const.weight"));
        assert_eq!(p.entries_count() + 1, full.entries_count());
        // The tensor is then quantized without weights.
        assert_eq!(
            p.for_tensor("blk.0.const.weight", "blk.0.const.weight", &[256, 4])
                .unwrap(),
            None
        );
    }
}

#[test]
fn lookups_check_the_length_like_llama_quantize() {
    let w = ImportanceWeights::load(golden("imatrix.gguf")).unwrap();
    let got = w
        .for_tensor("blk.0.gauss_a.weight", "blk.0.gauss_a.weight", &[1024, 64])
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1024);
    let err = w
        .for_tensor("blk.0.gauss_a.weight", "blk.0.gauss_a.weight", &[512, 64])
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImatrixError::WrongLength { .. }));
    assert!(
        msg.contains("imatrix.gguf") && msg.contains("blk.0.gauss_a.weight"),
        "{msg}"
    );
    // The token embeddings just go without.
    let mut w2 = w.clone();
    let v = w2.entries["blk.0.gauss_a.weight"].clone();
    w2.entries.insert("token_embd.weight".into(), v);
    assert_eq!(
        w2.for_tensor("token_embd.weight", "token_embd.weight", &[256, 64])
            .unwrap(),
        None
    );
}

#[test]
fn include_and_exclude_filter_by_substring() {
    let all = ImportanceWeights::load(golden("imatrix.gguf")).unwrap();
    let mut ex = all.clone();
    ex.filter(&[], &["gauss".into(), "real_".into()]).unwrap();
    assert!(ex
        .entries
        .keys()
        .all(|k| !k.contains("gauss") && !k.contains("real_")));
    assert_eq!(ex.entries_count(), all.entries_count() - 4);
    let mut inc = all.clone();
    inc.filter(&["gauss".into(), "gauss_a".into(), "odd".into()], &[])
        .unwrap();
    let kept: Vec<&String> = inc.entries.keys().collect();
    assert_eq!(
        kept,
        vec![
            "blk.0.gauss_a.weight",
            "blk.0.gauss_b.weight",
            "blk.0.odd100.weight",
            "blk.0.odd384.weight",
            "blk.0.odd96.weight"
        ]
    );
    let mut both = all.clone();
    assert!(matches!(
        both.filter(&["a".into()], &["b".into()]),
        Err(ImatrixError::IncludeAndExclude)
    ));
    // Filtering everything away means quantizing without an imatrix.
    assert!(
        prepare(golden("imatrix.gguf"), &["nothing-matches".into()], &[])
            .unwrap()
            .is_none()
    );
}

#[test]
fn quantize_keys_follow_quantize_cpp() {
    let mut w = ImportanceWeights::load(golden("imatrix.gguf")).unwrap();
    w.filter(&[], &["const".into()]).unwrap();
    let kv = w.quantize_kv("imatrix.gguf");
    let expected = vec![
        (
            "quantize.imatrix.file".to_string(),
            Value::Str("imatrix.gguf".into()),
        ),
        (
            "quantize.imatrix.dataset".to_string(),
            Value::Str("qforge-golden-calibration".into()),
        ),
        ("quantize.imatrix.entries_count".to_string(), Value::U32(16)),
        ("quantize.imatrix.chunks_count".to_string(), Value::U32(10)),
    ];
    assert_eq!(kv, expected);
    let long = "x".repeat(200);
    assert_eq!(w.quantize_kv(&long)[0].1, Value::Str("x".repeat(127)));
}

fn sample_stats() -> ImatrixStats {
    let mut s = ImatrixStats::new(512);
    // A dense entry, a 3-expert entry with one expert never routed to, and an entry with no
    // data (skipped by the legacy writer only).
    s.entries.insert(
        "blk.0.attn_q.weight".into(),
        StatsEntry {
            values: (0..64).map(|i| i as f32 * 0.37 + 0.01).collect(),
            counts: vec![5120],
        },
    );
    s.entries.insert(
        "blk.0.ffn_up_exps.weight".into(),
        StatsEntry {
            values: (0..96).map(|i| (i as f32).sqrt() * 3.5).collect(),
            counts: vec![700, 0, 1333],
        },
    );
    s.entries.insert(
        "blk.1.attn_q.weight".into(),
        StatsEntry {
            values: vec![0.5; 32],
            counts: vec![0],
        },
    );
    s.datasets = vec!["old.txt".into(), "calibration.txt".into()];
    s.chunk_count = 10;
    s
}

#[test]
fn gguf_writer_round_trips() {
    let dir = temp_dir("imatrix-gguf");
    let path = dir.join("out.gguf");
    let s = sample_stats();
    s.write_gguf(&path).unwrap();
    let f = ImatrixFile::open(&path).unwrap();
    assert_eq!(f.format, ImatrixFormat::Gguf);
    assert!(f.has_metadata);
    assert_eq!(f.datasets, s.datasets);
    assert_eq!((f.chunk_count, f.chunk_size), (10, 512));
    assert_eq!(f.entries.len(), 3);
    for (name, e) in &s.entries {
        assert_eq!(bits(&f.entries[name].sums), bits(&e.values), "{name}");
        assert_eq!(f.entries[name].counts, e.counts, "{name}");
    }
    // Layout as gguf.cpp writes it: sorted names, trailing 1s dropped from shapes.
    let g = GgufFile::open(&path).unwrap();
    let layout: Vec<(String, Vec<u64>)> = g
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ne.clone()))
        .collect();
    assert_eq!(
        layout,
        vec![
            ("blk.0.attn_q.weight.in_sum2".into(), vec![64]),
            ("blk.0.attn_q.weight.counts".into(), vec![1]),
            ("blk.0.ffn_up_exps.weight.in_sum2".into(), vec![32, 3]),
            ("blk.0.ffn_up_exps.weight.counts".into(), vec![1, 3]),
            ("blk.1.attn_q.weight.in_sum2".into(), vec![32]),
            ("blk.1.attn_q.weight.counts".into(), vec![1]),
        ]
    );
    let keys: Vec<&str> = g.metadata.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        vec![
            "general.type",
            "imatrix.datasets",
            "imatrix.chunk_count",
            "imatrix.chunk_size"
        ]
    );
    // Weights per expert: the unrouted expert gets 1s, the others sums / count.
    let w = ImportanceWeights::from_file(&f).unwrap();
    let e = &w.entries["blk.0.ffn_up_exps.weight"];
    let v = &s.entries["blk.0.ffn_up_exps.weight"].values;
    assert_eq!(e[5].to_bits(), (v[5] / 700.0).to_bits());
    assert!(e[32..64].iter().all(|&x| x == 1.0));
    assert_eq!(e[70].to_bits(), (v[70] / 1333.0).to_bits());
    assert!(w.entries["blk.1.attn_q.weight"].iter().all(|&x| x == 1.0));

    // Merging the file into empty statistics gives the statistics back.
    let mut merged = ImatrixStats::new(512);
    merged.merge_file(&f).unwrap();
    assert_eq!(merged.entries, s.entries);
    assert_eq!(merged.chunk_count, 5120 / 512);
}

#[test]
fn legacy_writer_round_trips() {
    let dir = temp_dir("imatrix-dat");
    let path = dir.join("out.dat");
    let s = sample_stats();
    s.write_legacy(&path).unwrap();
    let f = ImatrixFile::open(&path).unwrap();
    assert_eq!(f.format, ImatrixFormat::Legacy);
    // The entry without data is not stored; the trailer holds the last dataset.
    assert_eq!(
        f.entries.keys().collect::<Vec<_>>(),
        vec!["blk.0.attn_q.weight", "blk.0.ffn_up_exps.weight"]
    );
    assert_eq!(f.datasets, vec!["calibration.txt".to_string()]);
    assert_eq!(f.chunk_count, 10);
    // ncall = ⌈max count / 512⌉; values (Σx²/count)·ncall, 1·ncall for the unrouted expert.
    let q = &f.entries["blk.0.attn_q.weight"];
    assert_eq!(q.counts, vec![10]);
    let x = &f.entries["blk.0.ffn_up_exps.weight"];
    assert_eq!(x.counts, vec![3]);
    let v = &s.entries["blk.0.ffn_up_exps.weight"].values;
    assert_eq!(x.sums[5].to_bits(), ((v[5] / 700.0) * 3.0).to_bits());
    assert_eq!(x.sums[40], 3.0);
    assert_eq!(x.sums[70].to_bits(), ((v[70] / 1333.0) * 3.0).to_bits());
    // Weights divide ncall back out.
    let w = ImportanceWeights::from_file(&f).unwrap();
    assert_eq!(
        w.entries["blk.0.ffn_up_exps.weight"][40], 1.0,
        "unrouted expert"
    );
    assert_eq!(w.chunk_count, 10);
}

#[test]
fn legacy_writer_reproduces_the_golden_dat_from_the_golden_gguf() {
    // The two golden files hold the same matrix: stats merged from the GGUF one and saved in
    // the legacy format must give the .dat byte for byte.
    for stem in ["imatrix", "imatrix-partial", "tiny-imatrix"] {
        let f = ImatrixFile::open(golden(&format!("{stem}.gguf"))).unwrap();
        let mut s = ImatrixStats::new(f.chunk_size);
        s.merge_file(&f).unwrap();
        assert_eq!(s.chunk_count, f.chunk_count, "{stem}");
        let dir = temp_dir(&format!("imatrix-golden-{stem}"));
        let out = dir.join("out.dat");
        s.write_legacy(&out).unwrap();
        let ours = std::fs::read(&out).unwrap();
        let theirs = std::fs::read(golden(&format!("{stem}.dat"))).unwrap();
        assert!(
            ours == theirs,
            "{stem}.dat differs ({} vs {} bytes)",
            ours.len(),
            theirs.len()
        );
    }
}

// ---- damaged inputs ----

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn legacy_bytes(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
    for (name, ncall, vals) in entries {
        b.extend_from_slice(&(name.len() as i32).to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&ncall.to_le_bytes());
        b.extend_from_slice(&(vals.len() as i32).to_le_bytes());
        for v in *vals {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    if let Some((chunks, ds)) = trailer {
        b.extend_from_slice(&chunks.to_le_bytes());
        b.extend_from_slice(&(ds.len() as i32).to_le_bytes());
        b.extend_from_slice(ds.as_bytes());
    }
    b
}

#[test]
fn truncated_files_are_refused_naming_file_and_field() {
    let dir = temp_dir("imatrix-trunc");
    let good = std::fs::read(golden("imatrix.dat")).unwrap();
    // Cut inside the first entry's values.
    let p = write(&dir, "cut.dat", &good[..100]);
    let err = ImatrixFile::open(&p).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImatrixError::Truncated { .. }), "{msg}");
    assert!(
        msg.contains("cut.dat") && msg.contains("values of entry 'blk.0.const.weight'"),
        "{msg}"
    );
    // Cut inside the trailer.
    let p = write(&dir, "cut-trailer.dat", &good[..good.len() - 5]);
    let msg = ImatrixFile::open(&p).unwrap_err().to_string();
    assert!(
        msg.contains("cut-trailer.dat") && msg.contains("dataset name"),
        "{msg}"
    );
    // No trailer at all is fine (it is optional).
    let p = write(
        &dir,
        "no-trailer.dat",
        &legacy_bytes(&[("a.weight", 1, &[1.0, 2.0])], None),
    );
    let f = ImatrixFile::open(&p).unwrap();
    assert_eq!((f.chunk_count, f.datasets.len()), (0, 0));
    // A truncated GGUF imatrix.
    let g = std::fs::read(golden("imatrix.gguf")).unwrap();
    let p = write(&dir, "cut.gguf", &g[..g.len() - 1000]);
    let msg = ImatrixFile::open(&p).unwrap_err().to_string();
    assert!(
        msg.contains("cut.gguf") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn corrupt_legacy_fields_are_refused() {
    let dir = temp_dir("imatrix-corrupt");
    let p = write(&dir, "empty.dat", &0i32.to_le_bytes());
    assert!(matches!(
        ImatrixFile::open(&p),
        Err(ImatrixError::NoEntries { .. })
    ));
    let mut b = legacy_bytes(&[("a.weight", 1, &[1.0])], None);
    b[4..8].copy_from_slice(&(-3i32).to_le_bytes());
    let p = write(&dir, "neg.dat", &b);
    assert!(matches!(
        ImatrixFile::open(&p),
        Err(ImatrixError::Corrupt { .. })
    ));
    let p = write(
        &dir,
        "nval0.dat",
        &legacy_bytes(&[("a.weight", 1, &[])], None),
    );
    let msg = ImatrixFile::open(&p).unwrap_err().to_string();
    assert!(
        msg.contains("nval0.dat") && msg.contains("'a.weight'"),
        "{msg}"
    );
}

#[test]
fn non_finite_values_are_refused_naming_the_entry() {
    let dir = temp_dir("imatrix-nan");
    let p = write(
        &dir,
        "nan.dat",
        &legacy_bytes(
            &[
                ("a.weight", 2, &[1.0, 2.0]),
                ("b.weight", 2, &[1.0, f32::NAN, 3.0]),
            ],
            Some((2, "d")),
        ),
    );
    let err = prepare(&p, &[], &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ImatrixError::NonFinite { index: 1, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("nan.dat") && msg.contains("'b.weight'"),
        "{msg}"
    );
    // llama-quantize checks only what is left after filtering.
    let w = prepare(&p, &[], &["b.".into()]).unwrap().unwrap();
    assert_eq!(w.entries_count(), 1);
    let p = write(
        &dir,
        "inf.dat",
        &legacy_bytes(&[("a.weight", 0, &[f32::INFINITY])], None),
    );
    assert!(matches!(
        prepare(&p, &[], &[]),
        Err(ImatrixError::NonFinite { .. })
    ));
}

/// A GGUF imatrix with the given tensors (name, type, ne, f32 values).
fn gguf_imatrix(
    path: &Path,
    with_metadata: bool,
    tensors: &[(&str, GgmlType, Vec<u64>, Vec<f32>)],
) {
    let mut md = Metadata::new();
    md.set("general.type", Value::Str("imatrix".into()));
    if with_metadata {
        md.set(
            "imatrix.datasets",
            Value::Array(ValueType::Str, vec![Value::Str("d".into())]),
        );
        md.set("imatrix.chunk_count", Value::U32(1));
        md.set("imatrix.chunk_size", Value::U32(512));
    }
    let infos: Vec<(String, GgmlType, Vec<u64>)> = tensors
        .iter()
        .map(|(n, t, ne, _)| (n.to_string(), *t, ne.clone()))
        .collect();
    let mut w = GgufWriter::create(path, &md, &infos).unwrap();
    for (_, ty, _, vals) in tensors {
        let bytes: Vec<u8> = if *ty == GgmlType::F32 {
            vals.iter().flat_map(|v| v.to_le_bytes()).collect()
        } else {
            vals.iter()
                .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
                .collect()
        };
        w.write_tensor(&bytes).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn corrupt_gguf_imatrices_are_refused() {
    let dir = temp_dir("imatrix-bad-gguf");
    let f32t = GgmlType::F32;

    let p = dir.join("unpaired.gguf");
    gguf_imatrix(
        &p,
        true,
        &[("a.weight.in_sum2", f32t, vec![4], vec![1.0; 4])],
    );
    let msg = ImatrixFile::open(&p).unwrap_err().to_string();
    assert!(
        msg.contains("unpaired.gguf") && msg.contains("'a.weight'") && msg.contains(".counts"),
        "{msg}"
    );

    let p = dir.join("f16.gguf");
    gguf_imatrix(
        &p,
        true,
        &[
            ("a.weight.in_sum2", GgmlType::F16, vec![4], vec![1.0; 4]),
            ("a.weight.counts", f32t, vec![1], vec![3.0]),
        ],
    );
    assert!(matches!(
        ImatrixFile::open(&p),
        Err(ImatrixError::NotF32 { .. })
    ));

    let p = dir.join("negative-count.gguf");
    gguf_imatrix(
        &p,
        true,
        &[
            ("a.weight.in_sum2", f32t, vec![4], vec![1.0; 4]),
            ("a.weight.counts", f32t, vec![1], vec![-1.0]),
        ],
    );
    let err = ImatrixFile::open(&p).unwrap_err();
    assert!(matches!(err, ImatrixError::BadCounts { .. }), "{err}");

    let p = dir.join("uneven.gguf");
    gguf_imatrix(
        &p,
        true,
        &[
            ("a.weight.in_sum2", f32t, vec![5], vec![1.0; 5]),
            ("a.weight.counts", f32t, vec![1, 2], vec![3.0, 4.0]),
        ],
    );
    let msg = ImatrixFile::open(&p).unwrap_err().to_string();
    assert!(
        msg.contains("uneven.gguf") && msg.contains("bad counts"),
        "{msg}"
    );

    let p = dir.join("no-metadata.gguf");
    gguf_imatrix(
        &p,
        false,
        &[
            ("a.weight.in_sum2", f32t, vec![4], vec![1.0; 4]),
            ("a.weight.counts", f32t, vec![1], vec![2.0]),
        ],
    );
    assert!(ImatrixFile::open(&p).is_ok());
    assert!(matches!(
        ImportanceWeights::load(&p),
        Err(ImatrixError::MissingMetadata { .. })
    ));

    // Counts are rounded half away from zero, as std::lround does: 2.5 → 3.
    let p = dir.join("round.gguf");
    gguf_imatrix(
        &p,
        true,
        &[
            (
                "a.weight.in_sum2",
                f32t,
                vec![2, 2],
                vec![3.0, 6.0, 1.0, 1.0],
            ),
            ("a.weight.counts", f32t, vec![1, 2], vec![2.5, 0.4]),
        ],
    );
    let f = ImatrixFile::open(&p).unwrap();
    assert_eq!(f.entries["a.weight"].counts, vec![3, 0]);
    let w = ImportanceWeights::from_file(&f).unwrap();
    assert_eq!(w.entries["a.weight"], vec![1.0, 2.0, 1.0, 1.0]);
}
