//! `qforge validate` and `qforge compare`, end to end through the binary (and the library API
//! where the report's fields matter): one broken file per problem class, built here by
//! corrupting a good synthetic GGUF, safetensors file or Hugging Face directory; every GGUF
//! golden sound; compare's JSON shape, its metadata diff, the error ordering Q8_0 < Q4_K_M <
//! Q2_K on a quantized synthetic model, and `--eval` perplexity / KL divergence.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qforge::formats::gguf::{encode_header, GgufFile, GgufWriter, Metadata, Value, ValueType};
use qforge::quant::GgmlType;
use qforge::runtime::synthetic::SyntheticLlama;

// ---------------------------------------------------------------------------------------------
// helpers

/// `../shared` beside the checkout (override with QFORGE_SHARED).
fn golden(rel: &str) -> PathBuf {
    let shared = std::env::var("QFORGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("golden").join(rel)
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qforge-inspect-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn qforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .output()
        .expect("running qforge")
}

/// Exit code and stdout lines of `qforge validate PATH`.
fn validate(path: &Path) -> (i32, Vec<String>) {
    let out = qforge(&["validate", s(path)]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    (
        out.status.code().unwrap_or(-1),
        stdout.lines().map(str::to_string).collect(),
    )
}

/// `qforge validate` must fail with at least one line that names the file and contains every
/// one of `needles`; returns the problem lines.
fn expect_problem(path: &Path, needles: &[&str]) -> Vec<String> {
    let (code, lines) = validate(path);
    assert_eq!(
        code,
        1,
        "{} should not be sound; got {lines:?}",
        path.display()
    );
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(name) && needles.iter().all(|n| l.contains(n))),
        "no problem line for {} containing {needles:?}: {lines:#?}",
        path.display()
    );
    lines
}

fn expect_sound(path: &Path) {
    let out = qforge(&["validate", s(path)]);
    assert!(
        out.status.success(),
        "{} should be sound: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "a sound file prints no problem lines"
    );
}

/// A synthetic llama (F32 weights) with `n_layer` layers written to `dir/name`.
fn synthetic(dir: &Path, name: &str, n_layer: u32, n_embd: u64, n_ff: u64) -> PathBuf {
    let m = SyntheticLlama {
        n_layer,
        n_embd,
        n_ff,
        n_head: 4,
        n_head_kv: 2,
        n_vocab: 256,
        weight_type: GgmlType::F32,
        seed: 7,
    };
    let p = dir.join(name);
    m.write_gguf(&p).unwrap();
    p
}

/// A GGUF file held in memory for editing.
struct Edit {
    md: Metadata,
    tensors: Vec<(String, GgmlType, Vec<u64>, Vec<u8>)>,
}

impl Edit {
    fn load(path: &Path) -> Edit {
        let f = GgufFile::open(path).unwrap();
        let tensors = f
            .tensors
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.ty,
                    t.ne.clone(),
                    f.tensor_data(t).to_vec(),
                )
            })
            .collect();
        Edit {
            md: f.metadata.clone(),
            tensors,
        }
    }

    fn save(&self, path: &Path) {
        let infos: Vec<(String, GgmlType, Vec<u64>)> = self
            .tensors
            .iter()
            .map(|(n, t, ne, _)| (n.clone(), *t, ne.clone()))
            .collect();
        let mut w = GgufWriter::create(path, &self.md, &infos).unwrap();
        for (_, _, _, d) in &self.tensors {
            w.write_tensor(d).unwrap();
        }
        w.finish().unwrap();
    }

    fn tensor_mut(&mut self, name: &str) -> &mut (String, GgmlType, Vec<u64>, Vec<u8>) {
        self.tensors.iter_mut().find(|t| t.0 == name).unwrap()
    }

    /// Edit a copy of `src` and write it to `dir/name`.
    fn variant(src: &Path, dir: &Path, name: &str, f: impl FnOnce(&mut Edit)) -> PathBuf {
        let mut e = Edit::load(src);
        f(&mut e);
        let p = dir.join(name);
        e.save(&p);
        p
    }
}

fn quantize(src: &Path, dst: &Path, ty: &str) {
    let out = qforge(&["quantize", s(src), s(dst), ty]);
    assert!(
        out.status.success(),
        "quantize {ty}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn compare_json(a: &Path, b: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["compare", s(a), s(b), "--json"];
    args.extend_from_slice(extra);
    let out = qforge(&args);
    assert!(
        out.status.success(),
        "compare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        std::fs::copy(e.path(), &to).unwrap();
        // Goldens are read-only; the copies get edited.
        let mut perm = std::fs::metadata(&to).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&to, perm).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// validate: sound inputs

#[test]
fn every_gguf_golden_is_sound() {
    let mut files = Vec::new();
    let mut stack = vec![
        golden(""),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"),
    ];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            // bad/ holds the inputs llama-quantize refuses, on purpose.
            if p.is_dir() && p.file_name().is_some_and(|n| n != "bad") {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "gguf") {
                files.push(p);
            }
        }
    }
    assert!(
        files.len() >= 40,
        "expected the golden GGUF files beside the checkout, found {}",
        files.len()
    );
    for f in &files {
        expect_sound(f);
    }
}

#[test]
fn golden_checkpoints_and_model_are_sound_with_the_right_kind() {
    for (p, kind) in [
        (golden("tiny-llama.f16.gguf"), "gguf-model"),
        (golden("tensors.f32.gguf"), "gguf-tensors"),
        (golden("imatrix.gguf"), "gguf-imatrix"),
        (golden("lora/lora.f32.gguf"), "gguf-adapter"),
        (golden("tiny-llama"), "hf-dir"),
        (golden("tiny-bpe"), "hf-dir"),
        (golden("tiny-llama/model.safetensors"), "safetensors"),
        (golden("lora/adapter"), "peft-adapter-dir"),
    ] {
        let out = qforge(&["validate", "--json", s(&p)]);
        assert!(out.status.success(), "{}", p.display());
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["kind"], kind, "{}", p.display());
        assert_eq!(j["problems"].as_array().unwrap().len(), 0);
        assert!(j["tensors_checked"].as_u64().unwrap() > 0);
    }
}

#[test]
fn golden_bad_inputs_are_refused_by_name() {
    expect_problem(&golden("bad/nan.f32.gguf"), &["blk.0.bad.weight", "NaN"]);
    expect_problem(&golden("bad/inf.f32.gguf"), &["blk.0.bad.weight", "inf"]);
    expect_problem(&golden("bad/truncated.f32.gguf"), &["truncated"]);
    expect_problem(&golden("bad/absurd-count.gguf"), &["tensor count"]);
}

#[test]
fn a_synthetic_model_and_its_quantizations_are_sound() {
    let dir = tmp("sound");
    let f32 = synthetic(&dir, "m.f32.gguf", 2, 256, 512);
    expect_sound(&f32);
    for ty in ["Q8_0", "Q4_K_M", "Q2_K", "IQ4_XS", "TQ2_0"] {
        let q = dir.join(format!("m.{ty}.gguf"));
        quantize(&f32, &q, ty);
        expect_sound(&q);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// validate: GGUF structure

#[test]
fn truncated_gguf_names_the_tensor_that_runs_past_the_end() {
    let dir = tmp("trunc");
    let good = synthetic(&dir, "good.gguf", 2, 64, 96);
    let bytes = std::fs::read(&good).unwrap();
    let bad = dir.join("cut.gguf");
    // Cut inside the last tensor (output_norm.weight, 256 bytes, stored last).
    std::fs::write(&bad, &bytes[..bytes.len() - 100]).unwrap();
    let f = GgufFile::open(&good).unwrap();
    let last = &f.tensors.last().unwrap().name;
    expect_problem(&bad, &["truncated", last]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same file with tensor offsets rewritten (same header length, same data section).
fn with_offsets(
    good: &Path,
    out: &Path,
    edit: impl FnOnce(&mut Vec<qforge::formats::gguf::TensorInfo>),
) {
    let f = GgufFile::open(good).unwrap();
    let mut infos = f.tensors.clone();
    edit(&mut infos);
    let header = encode_header(&f.metadata, &infos, f.metadata.alignment());
    assert_eq!(header.len() as u64, f.data_offset);
    let bytes = std::fs::read(good).unwrap();
    let mut outb = header;
    outb.extend_from_slice(&bytes[f.data_offset as usize..]);
    std::fs::write(out, outb).unwrap();
}

#[test]
fn overlapping_and_misaligned_offsets_are_named() {
    let dir = tmp("offsets");
    let good = synthetic(&dir, "good.gguf", 2, 64, 96);
    let f = GgufFile::open(&good).unwrap();
    let t1 = f.tensors[1].name.clone();

    let overlap = dir.join("overlap.gguf");
    with_offsets(&good, &overlap, |t| t[1].offset = t[0].offset);
    // The reader refuses any layout gguf.cpp refuses (offsets must be exactly sequential), so
    // the overlap is named as that rule, with the tensor whose offset breaks it.
    expect_problem(&overlap, &[&t1, "overlaps"]);

    let misaligned = dir.join("misaligned.gguf");
    with_offsets(&good, &misaligned, |t| t[1].offset += 4);
    expect_problem(&misaligned, &[&t1, "aligned"]);

    // Out of order (swapped data): gguf.cpp insists on contiguous data in tensor order.
    let swapped = dir.join("swapped.gguf");
    with_offsets(&good, &swapped, |t| {
        let last = t.len() - 1;
        let (a, b) = (t[last - 1].offset, t[last].offset);
        if t[last - 1].n_bytes() == t[last].n_bytes() {
            t[last - 1].offset = b;
            t[last].offset = a;
        } else {
            t[last].offset = a; // overlap instead; still named
        }
    });
    let (code, lines) = validate(&swapped);
    assert_eq!(code, 1, "{lines:?}");

    let align_type = Edit::variant(&good, &dir, "align-type.gguf", |e| {
        e.md.set("general.alignment", Value::U64(32));
    });
    expect_problem(&align_type, &["general.alignment", "u32"]);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// validate: values and block scales

#[test]
fn nan_and_inf_values_are_found_in_every_float_type() {
    let dir = tmp("values");
    let good = synthetic(&dir, "good.gguf", 2, 64, 96);
    // NaN in an F32 norm.
    let nan = Edit::variant(&good, &dir, "nan-f32.gguf", |e| {
        let t = e.tensor_mut("blk.1.ffn_norm.weight");
        t.3[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    expect_problem(&nan, &["blk.1.ffn_norm.weight", "NaN"]);
    // Inf in an F16 matrix.
    let inf16 = Edit::variant(&good, &dir, "inf-f16.gguf", |e| {
        let t = e.tensor_mut("blk.0.attn_q.weight");
        let n = t.3.len() / 4;
        let mut h: Vec<u8> = Vec::with_capacity(n * 2);
        for c in t.3.chunks_exact(4) {
            let v = f32::from_le_bytes(c.try_into().unwrap());
            h.extend_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
        }
        h[2 * 77..2 * 77 + 2].copy_from_slice(&0x7c00u16.to_le_bytes());
        t.1 = GgmlType::F16;
        t.3 = h;
    });
    expect_problem(&inf16, &["blk.0.attn_q.weight", "F16"]);
    // NaN in a BF16 matrix.
    let nanbf = Edit::variant(&good, &dir, "nan-bf16.gguf", |e| {
        let t = e.tensor_mut("blk.0.ffn_up.weight");
        let mut h: Vec<u8> = Vec::new();
        for c in t.3.chunks_exact(4) {
            h.extend_from_slice(&c[2..4]);
        }
        h[10..12].copy_from_slice(&0x7fc1u16.to_le_bytes());
        t.1 = GgmlType::BF16;
        t.3 = h;
    });
    expect_problem(&nanbf, &["blk.0.ffn_up.weight", "BF16"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Patch `bytes` of tensor `name` at `offset` inside its data, in a copy of `src`.
fn patch_tensor(src: &Path, dst: &Path, name: &str, offset: usize, bytes: &[u8]) {
    let f = GgufFile::open(src).unwrap();
    let t = f.tensor(name).unwrap();
    let at = (f.data_offset + t.offset) as usize + offset;
    let mut b = std::fs::read(src).unwrap();
    b[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(dst, b).unwrap();
}

#[test]
fn non_finite_block_scales_d_and_dmin_are_found() {
    let dir = tmp("scales");
    let f32 = synthetic(&dir, "m.f32.gguf", 2, 256, 512);
    let q8 = dir.join("m.Q8_0.gguf");
    quantize(&f32, &q8, "Q8_0");
    let q4k = dir.join("m.Q4_K_M.gguf");
    quantize(&f32, &q4k, "Q4_K_M");
    let q2k = dir.join("m.Q2_K.gguf");
    quantize(&f32, &q2k, "Q2_K");

    // Q8_0: d of the third block (34-byte blocks, d first).
    let bad = dir.join("q8-d.gguf");
    patch_tensor(
        &q8,
        &bad,
        "blk.0.attn_k.weight",
        2 * 34,
        &0x7c00u16.to_le_bytes(),
    );
    expect_problem(&bad, &["blk.0.attn_k.weight", "Q8_0", "scale"]);

    // Q4_K: dmin (bytes 2..4 of a 144-byte block) NaN, d intact.
    let f = GgufFile::open(&q4k).unwrap();
    let q4_tensor = f
        .tensors
        .iter()
        .find(|t| t.ty == GgmlType::Q4_K)
        .unwrap()
        .name
        .clone();
    let bad = dir.join("q4k-dmin.gguf");
    patch_tensor(&q4k, &bad, &q4_tensor, 144 + 2, &0x7e00u16.to_le_bytes());
    expect_problem(&bad, &[&q4_tensor, "Q4_K", "scale"]);

    // Q2_K: d at byte 80 of an 84-byte block.
    let bad = dir.join("q2k-d.gguf");
    patch_tensor(
        &q2k,
        &bad,
        "blk.1.ffn_gate.weight",
        80,
        &0xfc00u16.to_le_bytes(),
    );
    expect_problem(&bad, &["blk.1.ffn_gate.weight", "Q2_K"]);

    // Through the library: the problem carries the tensor name as a field.
    let report = qforge::inspect::validate(&bad, &mut |_| {}).unwrap();
    assert!(!report.is_sound());
    assert_eq!(
        report.problems[0].tensor.as_deref(),
        Some("blk.1.ffn_gate.weight")
    );
    assert_eq!(report.problems[0].file, bad);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// validate: what llama.cpp's loader requires

#[test]
fn a_missing_layer_tensor_is_named() {
    let dir = tmp("missing");
    let good = synthetic(&dir, "good.gguf", 8, 64, 96);
    expect_sound(&good);
    let bad = Edit::variant(&good, &dir, "no-ffn-down.gguf", |e| {
        e.tensors.retain(|t| t.0 != "blk.7.ffn_down.weight");
    });
    let lines = expect_problem(&bad, &["blk.7.ffn_down.weight", "missing"]);
    assert_eq!(lines.len(), 1, "exactly one problem: {lines:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrong_shapes_and_unexpected_tensors_are_named() {
    let dir = tmp("shapes");
    let good = synthetic(&dir, "good.gguf", 2, 64, 96);
    let bad = Edit::variant(&good, &dir, "k-shape.gguf", |e| {
        let t = e.tensor_mut("blk.1.attn_k.weight");
        t.2 = vec![64, 16]; // n_embd_k_gqa is 32
        t.3.truncate(64 * 16 * 4);
    });
    expect_problem(&bad, &["blk.1.attn_k.weight", "[64, 16]", "[64, 32]"]);
    let extra = Edit::variant(&good, &dir, "extra.gguf", |e| {
        e.tensors.push((
            "blk.0.mystery.weight".into(),
            GgmlType::F32,
            vec![64],
            vec![0u8; 256],
        ));
    });
    expect_problem(&extra, &["blk.0.mystery.weight", "wrong number of tensors"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_and_mistyped_hyper_parameters_are_named() {
    let dir = tmp("keys");
    let good = synthetic(&dir, "good.gguf", 2, 64, 96);
    let no_eps = Edit::variant(&good, &dir, "no-eps.gguf", |e| {
        e.md.remove("llama.attention.layer_norm_rms_epsilon");
    });
    expect_problem(
        &no_eps,
        &["llama.attention.layer_norm_rms_epsilon", "missing"],
    );
    let typed = Edit::variant(&good, &dir, "i32-blocks.gguf", |e| {
        e.md.set("llama.block_count", Value::I32(2));
    });
    expect_problem(&typed, &["llama.block_count", "U32"]);
    let no_blocks = Edit::variant(&good, &dir, "no-blocks.gguf", |e| {
        e.md.remove("llama.block_count");
    });
    let lines = expect_problem(&no_blocks, &["llama.block_count", "missing"]);
    assert_eq!(lines.len(), 1, "one cause, one line: {lines:?}");
    let no_arch = Edit::variant(&good, &dir, "no-arch.gguf", |e| {
        e.md.remove("general.architecture");
    });
    expect_problem(&no_arch, &["general.architecture"]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn strings(v: &[&str]) -> Value {
    Value::Array(
        ValueType::Str,
        v.iter().map(|s| Value::Str(s.to_string())).collect(),
    )
}

#[test]
fn vocabulary_problems_are_named() {
    let dir = tmp("vocab");
    let good = synthetic(&dir, "good.gguf", 2, 64, 96);

    let short = Edit::variant(&good, &dir, "short-vocab.gguf", |e| {
        let Some(Value::Array(t, mut items)) = e.md.get("tokenizer.ggml.tokens").cloned() else {
            panic!()
        };
        items.truncate(250);
        e.md.set("tokenizer.ggml.tokens", Value::Array(t, items));
    });
    expect_problem(&short, &["token_embd.weight", "256 rows", "250 tokens"]);

    let bos = Edit::variant(&good, &dir, "bos.gguf", |e| {
        e.md.set("tokenizer.ggml.bos_token_id", Value::U32(300));
    });
    expect_problem(
        &bos,
        &["tokenizer.ggml.bos_token_id", "300", "out of range"],
    );

    let template = Edit::variant(&good, &dir, "template.gguf", |e| {
        e.md.set(
            "tokenizer.chat_template",
            Value::Str("{% for m in messages %}{{ m['content'] }".into()),
        );
    });
    expect_problem(&template, &["tokenizer.chat_template", "does not parse"]);
    let fine = Edit::variant(&good, &dir, "template-ok.gguf", |e| {
        e.md.set(
            "tokenizer.chat_template",
            Value::Str(
                "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | trim }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
                    .into(),
            ),
        );
    });
    expect_sound(&fine);

    // A BPE vocabulary needs merges and a pre-tokenizer llama.cpp knows.
    let bpe = |e: &mut Edit, pre: Option<&str>| {
        e.md.set("tokenizer.ggml.model", Value::Str("gpt2".into()));
        e.md.set("tokenizer.ggml.merges", strings(&["<t1> <t2>"]));
        if let Some(p) = pre {
            e.md.set("tokenizer.ggml.pre", Value::Str(p.into()));
        }
    };
    let known = Edit::variant(&good, &dir, "pre-ok.gguf", |e| bpe(e, Some("smollm")));
    expect_sound(&known);
    let unknown = Edit::variant(&good, &dir, "pre-bad.gguf", |e| bpe(e, Some("no-such-pre")));
    expect_problem(&unknown, &["tokenizer.ggml.pre", "no-such-pre"]);
    let none = Edit::variant(&good, &dir, "pre-none.gguf", |e| bpe(e, None));
    expect_problem(&none, &["tokenizer.ggml.pre", "missing"]);

    let no_vocab = Edit::variant(&good, &dir, "no-tokens.gguf", |e| {
        e.md.remove("tokenizer.ggml.tokens");
    });
    expect_problem(&no_vocab, &["tokenizer.ggml.tokens", "missing"]);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// validate: split sets

/// Write `src` as a two-file split set `dir/NAME-0000i-of-00002.gguf` the way gguf-split lays
/// it out (all metadata in the first shard, split.* keys in both).
fn write_split(src: &Path, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let e = Edit::load(src);
    let n = e.tensors.len();
    let half = n / 2;
    let paths = (
        dir.join(format!("{name}-00001-of-00002.gguf")),
        dir.join(format!("{name}-00002-of-00002.gguf")),
    );
    let mut md1 = e.md.clone();
    md1.set("split.no", Value::U16(0));
    md1.set("split.count", Value::U16(2));
    md1.set("split.tensors.count", Value::I32(n as i32));
    let mut md2 = Metadata::new();
    md2.set("split.no", Value::U16(1));
    md2.set("split.count", Value::U16(2));
    md2.set("split.tensors.count", Value::I32(n as i32));
    Edit {
        md: md1,
        tensors: e.tensors[..half].to_vec(),
    }
    .save(&paths.0);
    Edit {
        md: md2,
        tensors: e.tensors[half..].to_vec(),
    }
    .save(&paths.1);
    paths
}

#[test]
fn split_sets_are_checked_as_one_model() {
    let dir = tmp("split");
    let good = synthetic(&dir, "good.gguf", 2, 64, 96);
    let (first, second) = write_split(&good, &dir, "model");
    expect_sound(&first);
    expect_sound(&second); // any shard names the whole set

    // A NaN in the second shard is reported against that shard.
    let f = GgufFile::open(&second).unwrap();
    let t = f
        .tensors
        .iter()
        .find(|t| t.ty == GgmlType::F32)
        .unwrap()
        .name
        .clone();
    patch_tensor(&second, &second, &t, 0, &f32::NAN.to_le_bytes());
    let (_, lines) = validate(&first);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("model-00002-of-00002.gguf") && l.contains(&t)),
        "{lines:?}"
    );

    std::fs::remove_file(&second).unwrap();
    expect_problem(&first, &["model-00002-of-00002.gguf", "missing"]);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// validate: safetensors files and Hugging Face directories

#[test]
fn safetensors_nan_and_corruption_are_named() {
    let dir = tmp("st");
    let src = golden("tiny-llama/model.safetensors");
    // Where the tensor's data lies in the file: the data section follows the header, and its
    // first tensor starts it.
    let rel = {
        let st = qforge::formats::safetensors::SafetensorsFile::open(&src).unwrap();
        let ptr = |n: &qforge::formats::safetensors::StTensor| st.data(n).as_ptr() as usize;
        let start = st.tensors().iter().map(ptr).min().unwrap();
        ptr(st.tensor("model.layers.3.mlp.up_proj.weight").unwrap()) - start
    };
    let mut bytes = std::fs::read(&src).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = 8 + header_len + rel + 2 * 10;
    // BF16 NaN.
    bytes[at..at + 2].copy_from_slice(&0x7fc0u16.to_le_bytes());
    let bad = dir.join("model.safetensors");
    std::fs::write(&bad, &bytes).unwrap();
    let (code, lines) = validate(&bad);
    assert_eq!(code, 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("model.layers") && l.contains("NaN")),
        "{lines:?}"
    );

    // Without the extension the header sniff still finds it.
    let noext = dir.join("weights");
    std::fs::write(&noext, &bytes).unwrap();
    expect_problem(&noext, &["model.layers.3.mlp.up_proj.weight", "NaN"]);

    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    expect_problem(&cut, &["not a valid safetensors file"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hf_directory_problems_are_named() {
    let root = tmp("hf");
    let good = root.join("tiny-bpe");
    copy_dir(&golden("tiny-bpe"), &good);
    expect_sound(&good);

    // config.json that does not parse.
    let d = root.join("bad-config");
    copy_dir(&good, &d);
    std::fs::write(d.join("config.json"), "{\"architectures\": [").unwrap();
    let (code, lines) = validate(&d);
    assert_eq!(code, 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("config.json") && l.contains("does not parse")),
        "{lines:?}"
    );

    // An architecture qforge does not convert.
    let d = root.join("arch");
    copy_dir(&good, &d);
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("LlamaForCausalLM", "GPTNeoXForCausalLM"),
    )
    .unwrap();
    let (code, lines) = validate(&d);
    assert_eq!(code, 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("architectures") && l.contains("GPTNeoXForCausalLM")),
        "{lines:?}"
    );

    // A shard the index names is missing: named, with a tensor it should hold.
    let d = root.join("shard");
    copy_dir(&good, &d);
    std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap();
    let (code, lines) = validate(&d);
    assert_eq!(code, 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("model.safetensors.index.json")
                && l.contains("model-00002-of-00002.safetensors")
                && l.contains("missing")),
        "{lines:?}"
    );

    // No tokenizer.
    let d = root.join("no-tok");
    copy_dir(&good, &d);
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    let (code, lines) = validate(&d);
    assert_eq!(code, 1);
    assert!(
        lines.iter().any(|l| l.contains("no tokenizer")),
        "{lines:?}"
    );

    // A NaN in a shard (F16 weights).
    let d = root.join("nan");
    copy_dir(&good, &d);
    let shard = d.join("model-00002-of-00002.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len();
    bytes[n - 2..].copy_from_slice(&0x7e00u16.to_le_bytes());
    std::fs::write(&shard, &bytes).unwrap();
    let (code, lines) = validate(&d);
    assert_eq!(code, 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("model-00002-of-00002.safetensors") && l.contains("NaN")),
        "{lines:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn validate_json_lists_problems_with_file_and_subject() {
    let dir = tmp("json");
    let good = synthetic(&dir, "good.gguf", 2, 64, 96);
    let bad = Edit::variant(&good, &dir, "two.gguf", |e| {
        e.tensors.retain(|t| t.0 != "output_norm.weight");
        e.md.set("tokenizer.ggml.eos_token_id", Value::U32(9999));
    });
    let out = qforge(&["validate", "--json", s(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = j["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|p| p["file"] == s(&bad)));
    assert!(problems.iter().any(|p| p["tensor"] == "output_norm.weight"));
    assert!(problems
        .iter()
        .any(|p| p["key"] == "tokenizer.ggml.eos_token_id"));
    assert_eq!(j["kind"], "gguf-model");
    assert_eq!(j["architecture"], "llama");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn qwen_requirements_follow_llama_cpp() {
    let dir = tmp("qwen");
    let good = synthetic(&dir, "good.gguf", 2, 64, 96);
    // As qwen3 the per-head Q/K norms are required.
    let q3 = Edit::variant(&good, &dir, "qwen3.gguf", |e| {
        let keys: Vec<(String, Value)> =
            e.md.iter()
                .map(|(k, v)| (k.replacen("llama.", "qwen3.", 1), v.clone()))
                .collect();
        let mut md = Metadata::new();
        for (k, v) in keys {
            md.set(&k, v);
        }
        md.set("general.architecture", Value::Str("qwen3".into()));
        e.md = md;
        e.tensors.retain(|t| !t.0.contains("rope_freqs"));
    });
    let lines = expect_problem(&q3, &["blk.0.attn_q_norm.weight", "missing"]);
    assert!(lines.iter().any(|l| l.contains("blk.1.attn_k_norm.weight")));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// compare

#[test]
fn compare_orders_q8_0_q4_k_m_q2_k_by_error() {
    let dir = tmp("order");
    let f32 = synthetic(&dir, "m.f32.gguf", 2, 256, 512);
    let mut overall = Vec::new();
    for ty in ["Q8_0", "Q4_K_M", "Q2_K"] {
        let q = dir.join(format!("m.{ty}.gguf"));
        quantize(&f32, &q, ty);
        let j = compare_json(&f32, &q, &[]);
        // The JSON shape the issue promises.
        for k in ["added", "removed", "changed"] {
            assert!(j["kv"][k].is_array(), "kv.{k}");
        }
        let tensors = j["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), GgufFile::open(&f32).unwrap().tensors.len());
        for t in tensors {
            for k in [
                "name", "type_a", "type_b", "shape_a", "shape_b", "rel_rmse", "max_abs",
            ] {
                assert!(t.get(k).is_some(), "tensor field {k}");
            }
            assert_eq!(t["shape_a"], t["shape_b"]);
            assert_eq!(t["type_a"], "F32");
        }
        assert!(j["eval"].is_null());
        // The changed file type is in the diff.
        assert!(j["kv"]["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["key"] == "general.file_type" && c["a"] == 0));
        let attn_q = tensors
            .iter()
            .find(|t| t["name"] == "blk.0.attn_q.weight")
            .unwrap();
        overall.push((
            ty,
            j["overall_rel_rmse"].as_f64().unwrap(),
            attn_q["rel_rmse"].as_f64().unwrap(),
            attn_q["max_abs"].as_f64().unwrap(),
        ));
    }
    for w in overall.windows(2) {
        assert!(w[0].1 < w[1].1, "overall error not increasing: {overall:?}");
        assert!(w[0].2 < w[1].2, "attn_q error not increasing: {overall:?}");
        assert!(
            w[0].3 < w[1].3,
            "attn_q max |d| not increasing: {overall:?}"
        );
    }
    assert!(overall[0].1 > 0.0 && overall[0].1 < 0.01, "{overall:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_of_a_file_with_itself_is_exact_and_diffs_metadata() {
    let dir = tmp("self");
    let a = synthetic(&dir, "a.gguf", 2, 64, 96);
    let j = compare_json(&a, &a, &[]);
    assert_eq!(j["overall_rel_rmse"], 0.0);
    for k in ["added", "removed", "changed"] {
        assert_eq!(j["kv"][k].as_array().unwrap().len(), 0);
    }
    assert!(j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["rel_rmse"] == 0.0 && t["max_abs"] == 0.0));

    // B: a key added, one removed, one changed; a tensor dropped, one reshaped, one new.
    let b = Edit::variant(&a, &dir, "b.gguf", |e| {
        e.md.set("general.name", Value::Str("renamed".into()));
        e.md.remove("llama.rope.freq_base");
        e.md.set("general.license", Value::Str("mit".into()));
        e.tensors.retain(|t| t.0 != "blk.1.ffn_up.weight");
        let t = e.tensor_mut("blk.0.attn_k.weight");
        t.2 = vec![32, 64];
        e.tensors
            .push(("extra.weight".into(), GgmlType::F32, vec![8], vec![0; 32]));
    });
    let j = compare_json(&a, &b, &[]);
    let kv = &j["kv"];
    assert_eq!(kv["added"][0]["key"], "general.license");
    assert_eq!(kv["removed"][0]["key"], "llama.rope.freq_base");
    assert_eq!(kv["changed"][0]["key"], "general.name");
    assert_eq!(kv["changed"][0]["b"], "renamed");
    let tensors = j["tensors"].as_array().unwrap();
    let find = |n: &str| tensors.iter().find(|t| t["name"] == n).unwrap();
    assert!(find("blk.1.ffn_up.weight")["type_b"].is_null());
    assert!(find("extra.weight")["type_a"].is_null());
    let k = find("blk.0.attn_k.weight");
    assert_eq!(k["shape_b"], serde_json::json!([32, 64]));
    assert!(k["rel_rmse"].is_null());
    // The text report prints the same table.
    let out = qforge(&["compare", s(&a), s(&b)]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1 added, 1 removed, 1 changed"), "{text}");
    assert!(
        text.contains("only in B") && text.contains("shapes differ"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_a_checkpoint_directory_with_its_conversion() {
    // tiny-llama's BF16 weights against convert's F16 file: same names, small error.
    let j = compare_json(&golden("tiny-llama"), &golden("tiny-llama.f16.gguf"), &[]);
    let tensors = j["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 75);
    for t in tensors {
        let r = t["rel_rmse"].as_f64().unwrap_or_else(|| panic!("{t}"));
        assert!(r < 2e-3, "{t}");
    }
}

#[test]
fn compare_eval_reports_ppl_of_both_and_kld_of_b_against_a() {
    let dir = tmp("eval");
    let base = golden("tiny-llama.f16.gguf");
    let text = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runtime_data/ppl_text.txt");
    let mut kld = Vec::new();
    for ty in ["Q8_0", "Q2_K"] {
        let q = dir.join(format!("tiny.{ty}.gguf"));
        quantize(&base, &q, ty);
        let j = compare_json(
            &base,
            &q,
            &["--eval", s(&text), "-c", "128", "--chunks", "3"],
        );
        let e = &j["eval"];
        assert_eq!(e["chunks"], 3);
        assert!(e["ppl_a"].as_f64().unwrap() > 1.0);
        assert!(e["ppl_b"].as_f64().unwrap() > 1.0);
        kld.push((
            ty,
            e["kld"]["mean_kld"].as_f64().unwrap(),
            e["ppl_a"].as_f64().unwrap(),
        ));
    }
    assert!(kld[0].1 > 0.0 && kld[0].1 < kld[1].1, "{kld:?}");
    // PPL(A) is the same measurement as `qforge perplexity` on A.
    let out = qforge(&[
        "perplexity",
        "-m",
        s(&base),
        "-f",
        s(&text),
        "-c",
        "128",
        "--chunks",
        "3",
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let ppl: f64 = stdout
        .split("Final estimate: PPL = ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((ppl - kld[0].2).abs() < 1e-3 * ppl, "{ppl} vs {kld:?}");
    // A model against itself: no divergence.
    let j = compare_json(
        &base,
        &base,
        &["--eval", s(&text), "-c", "128", "--chunks", "2"],
    );
    assert_eq!(j["eval"]["kld"]["mean_kld"].as_f64().unwrap().abs(), 0.0);
    assert_eq!(j["eval"]["ppl_a"], j["eval"]["ppl_b"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_converted_architecture_is_sound_before_and_after_convert() {
    use qforge::convert::synthetic_hf::{HfFlavor, SyntheticHf};
    let root = tmp("archs");
    for flavor in HfFlavor::ALL {
        let tok = golden(if flavor.uses_bpe() {
            "tiny-bpe"
        } else {
            "tiny-llama"
        });
        let dir = root.join(flavor.name());
        SyntheticHf::preset(flavor).write(&dir, &tok).unwrap();
        expect_sound(&dir);
        let gguf = root.join(format!("{}.f16.gguf", flavor.name()));
        let out = qforge(&["convert", s(&dir), "--outtype", "f16", "-o", s(&gguf)]);
        assert!(
            out.status.success(),
            "convert {}: {}",
            flavor.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        expect_sound(&gguf);
        let report = qforge::inspect::validate(&gguf, &mut |_| {}).unwrap();
        assert_eq!(report.kind, Some(qforge::inspect::FileKind::GgufModel));
        let arch = report.architecture.clone().unwrap();
        if !qforge::inspect::required::KNOWN_ARCHITECTURES.contains(&arch.as_str()) {
            // The families added after the loader tables (MoE Qwen, Gemma, Phi-3, ...): validate
            // says it skipped that check, naming the architecture.
            assert!(
                report.notes.iter().any(|n| n.contains(&arch)),
                "{arch}: {:?}",
                report.notes
            );
            continue;
        }
        // The loader requirements were checked, not skipped with a note.
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        // And a required tensor removed from it is named.
        let bad = Edit::variant(&gguf, &root, &format!("{}.bad.gguf", flavor.name()), |e| {
            e.tensors.retain(|t| t.0 != "blk.1.attn_v.weight");
        });
        expect_problem(&bad, &["blk.1.attn_v.weight", "missing", &arch]);
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn compare_refuses_a_missing_model_by_name() {
    let out = qforge(&[
        "compare",
        s(&golden("tiny-llama.f16.gguf")),
        "/nonexistent/b.gguf",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/b.gguf"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = qforge(&["validate", "/nonexistent/x.gguf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.gguf"));
}

#[test]
fn peft_adapter_directory_problems_are_named() {
    let root = tmp("peft");
    let good = root.join("adapter");
    copy_dir(&golden("lora/adapter"), &good);
    expect_sound(&good);

    let d = root.join("bad-config");
    copy_dir(&good, &d);
    let cfg = std::fs::read_to_string(d.join("adapter_config.json")).unwrap();
    std::fs::write(
        d.join("adapter_config.json"),
        cfg.replace("\"r\": 8", "\"r\": \"eight\""),
    )
    .unwrap();
    let (code, lines) = validate(&d);
    assert_eq!(code, 1);
    assert!(
        lines.iter().any(|l| l.contains("adapter_config.json")),
        "{lines:?}"
    );

    // A NaN in the adapter's F32 weights (the last element of the file).
    let d = root.join("nan");
    copy_dir(&good, &d);
    let w = d.join("adapter_model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&w, &bytes).unwrap();
    let (code, lines) = validate(&d);
    assert_eq!(code, 1);
    assert!(
        lines.iter().any(|l| l.contains("adapter_model.safetensors")
            && l.contains("lora")
            && l.contains("NaN")),
        "{lines:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn pickle_only_checkpoints_are_named_as_such() {
    let root = tmp("pickle");
    let d = root.join("pt");
    copy_dir(&golden("tiny-llama"), &d);
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("pytorch_model.bin"), b"PK not really").unwrap();
    let (code, lines) = validate(&d);
    assert_eq!(code, 1);
    assert!(lines.iter().any(|l| l.contains("PyTorch")), "{lines:?}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn real_world_chat_template_constructs_parse() {
    use qforge::inspect::validate::parse_chat_template;
    // The constructs Hugging Face templates use: namespaces with attribute assignment, slices,
    // tests, filters with arguments, loop controls, macros, whitespace control, calls of
    // functions only the renderer defines (raise_exception, strftime_now), string methods.
    let template = r#"{%- macro render(m) -%}{{ m['content'] | trim }}{%- endmacro -%}
{%- set ns = namespace(system=false, last_user=0) -%}
{%- if messages[0]['role'] == 'system' -%}
  {%- set ns.system = true -%}{{ '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- else -%}{{ '<|im_start|>system\nToday is ' + strftime_now('%d %b %Y') + '<|im_end|>\n' }}{%- endif -%}
{%- for message in messages[1:] if message.role != 'system' -%}
  {%- if message.role not in ['user', 'assistant', 'tool'] -%}{{ raise_exception('bad role ' ~ message.role) }}{%- endif -%}
  {%- if message.content is string and message.content.startswith('<think>') -%}{%- continue -%}{%- endif -%}
  {{ '<|im_start|>' + message.role + '\n' }}{{ render(message) }}
  {%- if message.tool_calls is defined and message.tool_calls -%}{{ message.tool_calls | tojson(indent=2) }}{%- endif -%}
  {{ '<|im_end|>\n' }}{%- if loop.last -%}{%- break -%}{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"#;
    parse_chat_template(template).unwrap();
    for broken in [
        "{% if x %}unclosed",
        "{{ messages[0] }",
        "{% for m in %}{% endfor %}",
        "{% endif %}",
    ] {
        let e = parse_chat_template(broken).unwrap_err();
        assert!(!e.is_empty(), "{broken}");
    }
}

#[test]
fn library_observers_see_every_tensor_and_kinds_pool_layers() {
    let dir = tmp("events");
    let a = synthetic(&dir, "a.gguf", 2, 64, 96);
    let n = GgufFile::open(&a).unwrap().tensors.len();
    let mut seen = Vec::new();
    let report = qforge::inspect::validate(&a, &mut |e| {
        if let qforge::inspect::ValidateEvent::Tensor {
            name, index, total, ..
        } = e
        {
            assert_eq!(total, n);
            seen.push((index, name.to_string()));
        }
    })
    .unwrap();
    assert!(report.is_sound());
    assert_eq!(report.tensors_checked, n);
    assert_eq!(seen.len(), n);
    assert!(seen.iter().enumerate().all(|(i, (j, _))| i == *j));

    let mut compared = 0;
    let r = qforge::inspect::compare(&a, &a, &mut |e| {
        if let qforge::inspect::CompareEvent::Tensor { .. } = e {
            compared += 1;
        }
    })
    .unwrap();
    assert_eq!(compared, n);
    assert_eq!(r.tensors.len(), n);
    assert_eq!(r.overall_rel_rmse, 0.0);
    // Per kind: a 2-layer model has two of each layer tensor.
    let q = r.kinds.iter().find(|k| k.kind == "attn_q.weight").unwrap();
    assert_eq!(q.count, 2);
    assert_eq!(q.elements, 2 * 64 * 64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Byte position, in a GGUF file's header, just after tensor `name`'s name string (where its
/// n_dims, ne[], type and offset follow).
fn after_tensor_name(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap();
    at + needle.len()
}

#[test]
fn unknown_types_and_partial_blocks_are_named() {
    let dir = tmp("types");
    let f32 = synthetic(&dir, "m.f32.gguf", 2, 64, 96);
    let q8 = dir.join("m.Q8_0.gguf");
    quantize(&f32, &q8, "Q8_0");
    let bytes = std::fs::read(&q8).unwrap();
    let name = "blk.0.attn_q.weight";

    // Type id 4 (a removed ggml type) in the tensor info.
    let p = after_tensor_name(&bytes, name);
    let n_dims = u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap()) as usize;
    let type_at = p + 4 + 8 * n_dims;
    let mut b = bytes.clone();
    b[type_at..type_at + 4].copy_from_slice(&4u32.to_le_bytes());
    let bad = dir.join("type4.gguf");
    std::fs::write(&bad, &b).unwrap();
    expect_problem(&bad, &[name, "unknown ggml type id 4"]);

    // A row of 40 elements is not a whole number of 32-element Q8_0 blocks.
    let mut b = bytes.clone();
    b[p + 4..p + 12].copy_from_slice(&40u64.to_le_bytes());
    let bad = dir.join("partial-block.gguf");
    std::fs::write(&bad, &b).unwrap();
    expect_problem(&bad, &[name, "whole number of blocks"]);
    let _ = std::fs::remove_dir_all(&dir);
}
