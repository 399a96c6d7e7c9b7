//! PyTorch checkpoints in (the restricted unpickler, the torch.save zip reader, `convert` on
//! `pytorch_model.bin`) and `qforge export` (GGUF → Hugging Face directory) with its contract
//! `convert(export(X)) == X`.
//!
//! Goldens: `tests/data/export/` (see its README.md): a real `torch.save` file with the values
//! torch read from it, and the sha256 of llama.cpp's convert_hf_to_gguf.py run on tiny-llama
//! saved with torch.save (single file and two shards). The test rebuilds those `.bin` files from
//! tiny-llama's safetensors with [`write_torch_save`], which writes the same pickle program and
//! zip layout torch.save does (torch's own files differ only in a random `serialization_id`
//! record, which no reader looks at).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use qforge::formats::pickle::{self, PickleError, Value};
use qforge::formats::safetensors::{Dtype, SafetensorsFile};
use qforge::formats::torch_zip::{TorchError, TorchFile};
use sha2::{Digest, Sha256};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data(rel: &str) -> PathBuf {
    repo().join("tests/data/export").join(rel)
}

/// `../shared/golden` beside the checkout (QFORGE_SHARED overrides `../shared`).
fn golden(rel: &str) -> PathBuf {
    let shared = std::env::var("QFORGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("../shared"));
    shared.join("golden").join(rel)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qforge-export-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Remove a test's scratch folder, unless QFORGE_EXPORT_KEEP is set (to inspect the exported
/// directories, e.g. load them with transformers).
fn cleanup(root: &Path) {
    if std::env::var_os("QFORGE_EXPORT_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(root);
    }
}

fn sha256_file(p: &Path) -> String {
    let bytes = std::fs::read(p).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn qforge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .output()
        .expect("run qforge")
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// A torch.save writer (test helper): protocol-2 pickle of an OrderedDict of
// `_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`, one storage record per
// tensor, stored uncompressed and 64-byte aligned, records named `<stem>/…` as torch names them.

struct Pickler(Vec<u8>);

impl Pickler {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn str(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        self.0.push(b'J');
        self.0.extend_from_slice(&(v as i32).to_le_bytes());
    }
    fn op(&mut self, op: u8) {
        self.0.push(op);
    }
}

fn storage_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "FloatStorage",
        Dtype::F16 => "HalfStorage",
        Dtype::BF16 => "BFloat16Storage",
        other => panic!("no storage for {other:?}"),
    }
}

/// Write `tensors` (name, dtype, shape, little-endian bytes) as torch.save would, in this order.
fn write_torch_save(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
    let mut p = Pickler(vec![0x80, 2]);
    p.global("collections", "OrderedDict");
    p.op(b')');
    p.op(b'R');
    p.op(b'(');
    for (i, (name, dtype, shape, bytes)) in tensors.iter().enumerate() {
        let esize = if *dtype == Dtype::F32 { 4 } else { 2 };
        p.str(name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'(');
        p.op(b'(');
        p.str("storage");
        p.global("torch", storage_name(*dtype));
        p.str(&i.to_string());
        p.str("cpu");
        p.int(bytes.len() / esize);
        p.op(b't');
        p.op(b'Q');
        p.int(0);
        p.op(b'(');
        for &d in shape {
            p.int(d);
        }
        p.op(b't');
        p.op(b'(');
        let mut stride = vec![1usize; shape.len()];
        for k in (0..shape.len().saturating_sub(1)).rev() {
            stride[k] = stride[k + 1] * shape[k + 1];
        }
        for s in stride {
            p.int(s);
        }
        p.op(b't');
        p.op(0x89);
        p.global("collections", "OrderedDict");
        p.op(b')');
        p.op(b'R');
        p.op(b't');
        p.op(b'R');
    }
    p.op(b'u');
    p.op(b'.');
    let mut records: Vec<(String, Vec<u8>)> = vec![
        (format!("{stem}/data.pkl"), p.0),
        (format!("{stem}/.format_version"), b"1".to_vec()),
        (format!("{stem}/.storage_alignment"), b"64".to_vec()),
        (format!("{stem}/byteorder"), b"little".to_vec()),
    ];
    for (i, (_, _, _, bytes)) in tensors.iter().enumerate() {
        records.push((format!("{stem}/data/{i}"), bytes.clone()));
    }
    records.push((format!("{stem}/version"), b"3\n".to_vec()));
    write_zip(path, &records);
}

fn write_zip(path: &Path, records: &[(String, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64);
    for (name, bytes) in records {
        z.start_file(name.as_str(), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

/// tiny-llama's tensors by name, from its safetensors file.
fn tiny_llama_tensors() -> std::collections::HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let f = SafetensorsFile::open(golden("tiny-llama/model.safetensors")).unwrap();
    f.tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                (t.dtype, t.shape.clone(), f.data(t).to_vec()),
            )
        })
        .collect()
}

fn keys(file: &str) -> Vec<String> {
    std::fs::read_to_string(data(&format!("bin/{file}")))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A `tiny-llama` directory (config and tokenizer from the golden) without weights.
fn tiny_llama_dir(root: &Path) -> PathBuf {
    let d = root.join("tiny-llama");
    std::fs::create_dir_all(&d).unwrap();
    for f in ["config.json", "tokenizer.model", "tokenizer_config.json"] {
        std::fs::copy(golden(&format!("tiny-llama/{f}")), d.join(f)).unwrap();
    }
    d
}

fn have_goldens() -> bool {
    let ok = golden("tiny-llama/model.safetensors").is_file();
    if !ok {
        eprintln!("skipped: ../shared/golden/tiny-llama is not there");
    }
    ok
}

fn write_bin_in_order(dir: &Path, file: &str, order: &[String]) {
    let all = tiny_llama_tensors();
    let tensors: Vec<_> = order
        .iter()
        .map(|k| {
            let (d, s, b) = all[k].clone();
            (k.clone(), d, s, b)
        })
        .collect();
    write_torch_save(&dir.join(file), &tensors);
}

fn converted(kind_outtype: &str) -> String {
    json(&data("bin/converted.json"))[kind_outtype]["file_sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

fn convert_cli(dir: &Path, outtype: &str, out: &Path) {
    let o = qforge(&[
        "convert",
        dir.to_str().unwrap(),
        "--outtype",
        outtype,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "convert {}: {}",
        dir.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The reader on a real torch.save file.

#[test]
fn real_torch_save_file_reads_as_torch_read_it() {
    let tf = TorchFile::open(data("torch_features.pt")).unwrap();
    let all = json(&data("torch_features.json"));
    let expect = all["tensors"].as_object().unwrap();
    let names: Vec<&str> = tf.tensors.iter().map(|t| t.name.as_str()).collect();
    let want: Vec<&str> = all["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(names, want, "pickle key order");
    assert_eq!(expect.len(), want.len());
    for t in &tf.tensors {
        let e = &expect[&t.name];
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{}", t.name);
        let bytes = &tf.map[t.start..t.start + t.len];
        let values: Vec<f64> = match t.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f64())
                .collect(),
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            other => panic!("{}: unexpected dtype {other:?}", t.name),
        };
        let dtype = e["dtype"].as_str().unwrap();
        let want_dtype = match dtype {
            "float32" => Dtype::F32,
            "float16" => Dtype::F16,
            "bfloat16" => Dtype::BF16,
            "int64" => Dtype::I64,
            other => panic!("{other}"),
        };
        assert_eq!(t.dtype, want_dtype, "{}", t.name);
        let want: Vec<f64> = e["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        // Compared as f32: every dtype here is exact in f32, and serde_json's float parsing is
        // not correctly rounded in the last f64 digit.
        let as_f32 = |v: &[f64]| v.iter().map(|x| (*x as f32).to_bits()).collect::<Vec<_>>();
        assert_eq!(as_f32(&values), as_f32(&want), "{}: values", t.name);
    }
}

#[test]
fn torch_tensors_survive_page_release_like_safetensors() {
    // The strided view makes the reader gather tensors into a scratch map: releasing pages (as
    // the converter does after each tensor) must not lose them.
    let tf = TorchFile::open(data("torch_features.pt")).unwrap();
    let (f, order) = SafetensorsFile::from_torch(tf);
    assert_eq!(order.len(), 7);
    let t = f.tensor("transposed.f32").unwrap().clone();
    assert_eq!(t.shape, vec![6, 4]);
    let mut a = vec![0f32; 24];
    f.read_f32(&t, 0, &mut a).unwrap();
    f.release(&t);
    let mut b = vec![0f32; 24];
    f.read_f32(&t, 0, &mut b).unwrap();
    assert_eq!(a, b);
    assert!(a.iter().any(|v| *v != 0.0));
    // The transposed view is the transpose of plain.f32 (a clone of the same values).
    let p = f.tensor("plain.f32").unwrap().clone();
    let mut m = vec![0f32; 24];
    f.read_f32(&p, 0, &mut m).unwrap();
    for i in 0..4 {
        for j in 0..6 {
            assert_eq!(a[j * 4 + i], m[i * 6 + j]);
        }
    }
    // Integer tensors are indexed but refused for conversion, by name.
    let ints = f.tensor("ints.i64").unwrap();
    let e = f.check_float(ints).unwrap_err().to_string();
    assert!(
        e.contains("torch_features.pt") && e.contains("ints.i64"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// convert on pytorch_model.bin, against convert_hf_to_gguf.py.

#[test]
fn single_bin_converts_like_convert_hf_to_gguf() {
    if !have_goldens() {
        return;
    }
    let root = scratch("bin-single");
    let dir = tiny_llama_dir(&root);
    write_bin_in_order(&dir, "pytorch_model.bin", &keys("single.keys"));
    for outtype in ["f32", "f16", "bf16"] {
        let out = root.join(format!("{outtype}.gguf"));
        convert_cli(&dir, outtype, &out);
        assert_eq!(
            sha256_file(&out),
            converted(&format!("single.{outtype}")),
            "{outtype}"
        );
    }
    // `model.pt` (which the converter itself does not look for) is read the same way.
    std::fs::remove_file(dir.join("pytorch_model.bin")).unwrap();
    write_bin_in_order(&dir, "model.pt", &keys("single.keys"));
    let out = root.join("pt.gguf");
    convert_cli(&dir, "f16", &out);
    assert_eq!(sha256_file(&out), converted("single.f16"));
    cleanup(&root);
}

#[test]
fn sharded_bin_with_index_converts_like_convert_hf_to_gguf() {
    if !have_goldens() {
        return;
    }
    let root = scratch("bin-sharded");
    let dir = tiny_llama_dir(&root);
    for shard in [
        "pytorch_model-00001-of-00002",
        "pytorch_model-00002-of-00002",
    ] {
        write_bin_in_order(
            &dir,
            &format!("{shard}.bin"),
            &keys(&format!("{shard}.keys")),
        );
    }
    std::fs::copy(
        data("bin/pytorch_model.bin.index.json"),
        dir.join("pytorch_model.bin.index.json"),
    )
    .unwrap();
    let out = root.join("f16.gguf");
    convert_cli(&dir, "f16", &out);
    assert_eq!(sha256_file(&out), converted("sharded.f16"));

    // A shard the index names but that is missing is refused by name, with no output.
    std::fs::remove_file(dir.join("pytorch_model-00002-of-00002.bin")).unwrap();
    let out2 = root.join("missing.gguf");
    let o = qforge(&[
        "convert",
        dir.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pytorch_model-00002-of-00002.bin"), "{err}");
    assert!(!out2.exists());
    cleanup(&root);
}

// ---------------------------------------------------------------------------------------------
// The restricted unpickler refuses code.

/// A pickle that, loaded by Python's pickle, would run `os.system(cmd)`.
fn os_system_pickle(module: &str, cmd: &str) -> Vec<u8> {
    let mut p = Pickler(vec![0x80, 2]);
    p.global(module, "system");
    p.str(cmd);
    p.op(0x85);
    p.op(b'R');
    p.op(b'.');
    p.0
}

#[test]
fn os_system_global_is_refused_nothing_runs_and_no_output() {
    let root = scratch("evil");
    let dir = root.join("evil-model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(golden("tiny-llama/config.json"), dir.join("config.json")).ok();
    if !dir.join("config.json").exists() {
        std::fs::write(
            dir.join("config.json"),
            r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","num_hidden_layers":1}"#,
        )
        .unwrap();
    }
    let marker = root.join("MARKER");
    let cmd = format!("touch {}", marker.display());
    for module in ["os", "posix"] {
        write_zip(
            &dir.join("pytorch_model.bin"),
            &[
                (
                    "pytorch_model/data.pkl".into(),
                    os_system_pickle(module, &cmd),
                ),
                ("pytorch_model/byteorder".into(), b"little".to_vec()),
            ],
        );
        let out = root.join("out.gguf");
        let o = qforge(&[
            "convert",
            dir.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("'{module}.system' is not allowed"))
                && err.contains("pytorch_model.bin"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!marker.exists(), "the command ran");
        assert!(!out.exists(), "an output file was left");
        let leftovers: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("out.gguf"))
            .collect();
        assert!(leftovers.is_empty(), "temp output left: {leftovers:?}");

        // The library says the same, naming the global.
        let e = TorchFile::open(dir.join("pytorch_model.bin"))
            .err()
            .unwrap();
        match e {
            TorchError::Pickle(PickleError::ForbiddenGlobal {
                module: m, name, ..
            }) => {
                assert_eq!((m.as_str(), name.as_str()), (module, "system"))
            }
            other => panic!("{other}"),
        }
    }
    cleanup(&root);
}

#[test]
fn unpickler_refuses_other_code_paths() {
    let p = Path::new("x.pkl");
    // builtins.eval through STACK_GLOBAL (protocol 4).
    let mut s = vec![0x80, 4];
    for w in ["builtins", "eval"] {
        s.push(0x8c);
        s.push(w.len() as u8);
        s.extend_from_slice(w.as_bytes());
    }
    s.extend_from_slice(&[0x93, b')', b'R', b'.']);
    assert!(matches!(
        pickle::unpickle(p, &s),
        Err(PickleError::ForbiddenGlobal { ref module, ref name, .. }) if module == "builtins" && name == "eval"
    ));
    // NEWOBJ and INST build objects by calling classes: refused as opcodes.
    let mut s = vec![0x80, 2];
    s.extend_from_slice(b"ccollections\nOrderedDict\n)\x81.");
    assert!(matches!(
        pickle::unpickle(p, &s),
        Err(PickleError::UnsupportedOpcode { opcode: 0x81, .. })
    ));
    assert!(matches!(
        pickle::unpickle(p, b"(ios\nsystem\n."),
        Err(PickleError::UnsupportedOpcode { opcode: b'i', .. })
    ));
    // An allowed global may only be called as data: a storage class called is malformed.
    let mut s = vec![0x80, 2];
    s.extend_from_slice(b"ctorch\nFloatStorage\n)R.");
    assert!(matches!(
        pickle::unpickle(p, &s),
        Err(PickleError::Malformed { .. })
    ));
    // Truncated program.
    assert!(matches!(
        pickle::unpickle(p, &[0x80, 2, b'X', 9, 0, 0, 0, b'a']),
        Err(PickleError::Malformed { .. })
    ));
    // A doubling bomb (DUP, TUPLE2, again and again: 2^60 values if copied) and deep nesting
    // are refused quickly instead of exhausting memory or the stack.
    let mut s = vec![0x80, 2, b')'];
    for _ in 0..60 {
        s.extend_from_slice(&[0x32, 0x86]);
    }
    s.push(b'.');
    let t = std::time::Instant::now();
    assert!(matches!(
        pickle::unpickle(p, &s),
        Err(PickleError::Malformed { ref what, .. }) if what.contains("copies more than")
    ));
    assert!(t.elapsed().as_secs() < 30);
    let mut s = vec![0x80, 2, b')'];
    s.extend(std::iter::repeat_n(0x85, 100_000));
    s.push(b'.');
    assert!(matches!(
        pickle::unpickle(p, &s),
        Err(PickleError::Malformed { ref what, .. }) if what.contains("nested deeper")
    ));
    // Plain data round trips through the machine.
    let mut s = vec![
        0x80, 2, b'}', b'(', b'K', 1, 0x88, b'X', 1, 0, 0, 0, b'k', b'G',
    ];
    s.extend_from_slice(&1.5f64.to_be_bytes());
    s.extend_from_slice(b"u.");
    assert_eq!(
        pickle::unpickle(p, &s).unwrap(),
        Value::Dict(vec![
            (Value::Int(1), Value::Bool(true)),
            (Value::Str("k".into()), Value::Float(1.5)),
        ])
    );
}

#[test]
fn legacy_and_broken_torch_files_are_refused_by_name() {
    let root = scratch("legacy");
    let legacy = root.join("old.bin");
    // The legacy format starts with a pickled magic number.
    std::fs::write(&legacy, [0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc]).unwrap();
    let e = TorchFile::open(&legacy).err().unwrap();
    assert!(matches!(e, TorchError::Legacy { .. }), "{e}");
    assert!(e.to_string().contains("old.bin"));

    // A tensor whose storage record is missing.
    let bin = root.join("pytorch_model.bin");
    write_torch_save(&bin, &[("w".into(), Dtype::F32, vec![2], vec![0u8; 8])]);
    let bytes = std::fs::read(&bin).unwrap();
    assert!(TorchFile::open(&bin).is_ok());
    // Rewrite with the record renamed.
    let z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let names: Vec<String> = z.file_names().map(|n| n.unwrap().to_string()).collect();
    assert!(names.contains(&"pytorch_model/data/0".to_string()));
    let pkl = {
        let mut z = z;
        let mut f = z.by_name("pytorch_model/data.pkl").unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut v).unwrap();
        v
    };
    write_zip(&bin, &[("pytorch_model/data.pkl".into(), pkl.clone())]);
    let e = TorchFile::open(&bin).err().unwrap().to_string();
    assert!(
        e.contains("pytorch_model.bin") && e.contains("'w'") && e.contains("missing"),
        "{e}"
    );
    // A storage shorter than the tensor claims.
    write_zip(
        &bin,
        &[
            ("pytorch_model/data.pkl".into(), pkl),
            ("pytorch_model/data/0".into(), vec![0u8; 4]),
        ],
    );
    let e = TorchFile::open(&bin).err().unwrap().to_string();
    assert!(e.contains("'w'") && e.contains("4 bytes"), "{e}");
    cleanup(&root);
}

// ---------------------------------------------------------------------------------------------
// qforge export: convert(export(X)) == X for files convert made.

fn export_cli(gguf: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "export",
        gguf.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    qforge(&args)
}

/// Convert `src` at `outtype` into X (which must be the golden `expect_sha`, so X is the file
/// llama.cpp's converter writes), export X into a directory called `dir_name`, convert that
/// again, and require X's bytes. Returns the exported directory.
fn round_trip(root: &Path, src: &Path, dir_name: &str, outtype: &str, expect_sha: &str) -> PathBuf {
    let x = root.join(format!("x.{outtype}.gguf"));
    convert_cli(src, outtype, &x);
    assert_eq!(
        sha256_file(&x),
        expect_sha,
        "{}: X is not the golden",
        src.display()
    );
    let exported = root.join(format!("exp-{outtype}")).join(dir_name);
    let o = export_cli(&x, &exported, &[]);
    assert!(
        o.status.success(),
        "export {}: {}",
        x.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let y = root.join(format!("y.{outtype}.gguf"));
    convert_cli(&exported, outtype, &y);
    let (xb, yb) = (std::fs::read(&x).unwrap(), std::fs::read(&y).unwrap());
    if xb != yb {
        panic!(
            "{} at {outtype}: convert(export(X)) differs from X ({} vs {} bytes; {})",
            src.display(),
            yb.len(),
            xb.len(),
            first_difference(&x, &y)
        );
    }
    exported
}

/// A one-line account of how two GGUF files differ (first differing key or tensor).
fn first_difference(a: &Path, b: &Path) -> String {
    use qforge::formats::gguf::GgufFile;
    let (fa, fb) = (GgufFile::open(a).unwrap(), GgufFile::open(b).unwrap());
    let ka: Vec<_> = fa.metadata.iter().collect();
    let kb: Vec<_> = fb.metadata.iter().collect();
    for i in 0..ka.len().max(kb.len()) {
        match (ka.get(i), kb.get(i)) {
            (Some(x), Some(y)) if x == y => continue,
            (x, y) => {
                let show = |v: Option<&(&str, &qforge::formats::gguf::Value)>| {
                    v.map(|(k, v)| {
                        format!(
                            "{k} = {}",
                            format!("{v:?}").chars().take(120).collect::<String>()
                        )
                    })
                };
                return format!("key #{i}: {:?} vs {:?}", show(x), show(y));
            }
        }
    }
    for i in 0..fa.tensors.len().max(fb.tensors.len()) {
        match (fa.tensors.get(i), fb.tensors.get(i)) {
            (Some(x), Some(y)) if x == y && fa.tensor_data(x) == fb.tensor_data(y) => continue,
            (x, y) => {
                return format!(
                    "tensor #{i}: {:?} vs {:?}",
                    x.map(|t| (&t.name, t.ty, &t.ne)),
                    y.map(|t| (&t.name, t.ty, &t.ne))
                )
            }
        }
    }
    "same keys and tensors".into()
}

fn manifest_sha(p: &Path) -> String {
    json(p)["file_sha256"].as_str().unwrap().to_string()
}

#[test]
fn export_round_trips_tiny_llama_spm() {
    if !have_goldens() {
        return;
    }
    let root = scratch("rt-tiny-llama");
    for outtype in ["f32", "f16", "bf16"] {
        let sha = manifest_sha(&golden(&format!("convert/{outtype}.json")));
        let dir = round_trip(&root, &golden("tiny-llama"), "tiny-llama", outtype, &sha);
        // What a Hugging Face directory has.
        for f in [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.model",
            "tokenizer_config.json",
            "README.md",
        ] {
            assert!(dir.join(f).is_file(), "{outtype}: no {f}");
        }
        let cfg = json(&dir.join("config.json"));
        assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
        assert_eq!(cfg["tie_word_embeddings"], false);
        assert_eq!(cfg["num_key_value_heads"], 2);
        // The checkpoint's own tensors come back: Q/K un-permuted, names restored.
        let orig = SafetensorsFile::open(golden("tiny-llama/model.safetensors")).unwrap();
        let back = SafetensorsFile::open(dir.join("model.safetensors")).unwrap();
        assert_eq!(orig.tensors().len(), back.tensors().len());
        if outtype == "bf16" {
            for t in orig.tensors() {
                let b = back
                    .tensor(&t.name)
                    .unwrap_or_else(|| panic!("{} missing", t.name));
                assert_eq!(b.shape, t.shape, "{}", t.name);
                let mut x = vec![0f32; t.n_elements()];
                let mut y = vec![0f32; t.n_elements()];
                orig.read_f32(t, 0, &mut x).unwrap();
                back.read_f32(b, 0, &mut y).unwrap();
                assert!(
                    x == y,
                    "{}: values differ from the original checkpoint",
                    t.name
                );
            }
        }
    }
    cleanup(&root);
}

#[test]
fn export_round_trips_tiny_bpe_sharded_tied() {
    if !have_goldens() {
        return;
    }
    let root = scratch("rt-tiny-bpe");
    for outtype in ["f32", "f16", "bf16"] {
        let sha = manifest_sha(&golden(&format!("convert-bpe/{outtype}.json")));
        let dir = round_trip(&root, &golden("tiny-bpe"), "tiny-bpe", outtype, &sha);
        assert!(dir.join("tokenizer.json").is_file());
        assert_eq!(json(&dir.join("config.json"))["tie_word_embeddings"], true);
    }
    cleanup(&root);
}

#[test]
fn export_round_trips_every_convert_arch_preset() {
    use qforge::convert::synthetic_hf::{HfFlavor, SyntheticHf};
    if !have_goldens() {
        return;
    }
    for flavor in HfFlavor::ALL {
        let root = scratch(&format!("rt-{}", flavor.name()));
        let m = SyntheticHf::preset(flavor);
        let src = root.join("src").join(m.dir_name());
        let tok = golden(if flavor.uses_bpe() {
            "tiny-bpe"
        } else {
            "tiny-llama"
        });
        m.write(&src, &tok).unwrap();
        if !matches!(
            flavor,
            HfFlavor::Mistral | HfFlavor::Qwen2 | HfFlavor::Qwen3 | HfFlavor::Llama3
        ) {
            // Export knows the llama family and Qwen2/3; MoE and the other dense families are
            // refused clearly (naming the architecture or an expert tensor), with no directory.
            let x = root.join("x.f16.gguf");
            convert_cli(&src, "f16", &x);
            let exported = root.join("exp");
            let o = export_cli(&x, &exported, &[]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{}", flavor.name());
            // Mixtral is llama to export and stops at its first expert tensor; the others are
            // refused as a whole.
            assert!(
                err.contains("not supported")
                    && (err.contains("_exps.weight") || err.contains(flavor.name())),
                "{err}"
            );
            assert!(!exported.exists(), "{}", exported.display());
            cleanup(&root);
            continue;
        }
        for outtype in ["f32", "f16", "bf16"] {
            let sha = manifest_sha(
                &repo()
                    .join("tests/data/convert_arch")
                    .join(flavor.name())
                    .join(format!("{outtype}.json")),
            );
            round_trip(&root, &src, &m.dir_name(), outtype, &sha);
        }
        cleanup(&root);
    }
}

#[test]
fn export_round_trips_llama_cpp_made_gguf() {
    let x = golden("tiny-llama.f16.gguf");
    if !x.is_file() {
        eprintln!("skipped: no {}", x.display());
        return;
    }
    let root = scratch("rt-llama-cpp");
    let dir = root.join("tiny-llama");
    let o = export_cli(&x, &dir, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let y = root.join("y.gguf");
    convert_cli(&dir, "f16", &y);
    assert!(
        std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
        "{}",
        first_difference(&x, &y)
    );
    cleanup(&root);
}

#[test]
fn export_keeps_module_order_of_a_bin_conversion_and_small_shards() {
    if !have_goldens() {
        return;
    }
    // X from pytorch_model.bin has tensors in module order, not sorted: export must lay out
    // shards so the converter meets them in that order again.
    let root = scratch("rt-bin-order");
    let src = tiny_llama_dir(&root.join("src"));
    write_bin_in_order(&src, "pytorch_model.bin", &keys("single.keys"));
    let dir = round_trip(&root, &src, "tiny-llama", "f16", &converted("single.f16"));
    let index = json(&dir.join("model.safetensors.index.json"));
    let shards: std::collections::BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(shards.len() > 1, "one shard cannot hold an unsorted order");

    // --max-shard-size splits further, and the result still converts to X.
    let x = root.join("x.f16.gguf");
    let small = root.join("small").join("tiny-llama");
    let o = export_cli(&x, &small, &["--max-shard-size", "1MB"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let index = json(&small.join("model.safetensors.index.json"));
    let map = index["weight_map"].as_object().unwrap();
    let mut sizes: std::collections::BTreeMap<String, u64> = Default::default();
    for f in map.values() {
        let f = f.as_str().unwrap().to_string();
        let n = std::fs::metadata(small.join(&f)).unwrap().len();
        sizes.insert(f, n);
    }
    for (f, n) in &sizes {
        // A shard holds more than the limit only when one tensor alone does (none here does).
        assert!(*n <= 1_000_000 + 4096, "{f}: {n} bytes");
    }
    let y = root.join("y-small.gguf");
    convert_cli(&small, "f16", &y);
    assert!(std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap());
    cleanup(&root);
}

#[test]
fn export_names_survive_another_directory_name_and_outtype_casts() {
    if !have_goldens() {
        return;
    }
    let root = scratch("rt-rename");
    let x = root.join("x.gguf");
    convert_cli(&golden("tiny-llama"), "bf16", &x);
    let dir = root.join("some-other-folder");
    let o = export_cli(&x, &dir, &["--outtype", "f32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = SafetensorsFile::open(dir.join("model.safetensors")).unwrap();
    assert!(st.tensors().iter().all(|t| t.dtype == Dtype::F32));
    assert_eq!(json(&dir.join("config.json"))["torch_dtype"], "float32");
    // bf16 values are exact in f32: converting at bf16 again gives X's tensors, and the card
    // keeps the name and size label whatever the folder is called.
    let y = root.join("y.gguf");
    convert_cli(&dir, "bf16", &y);
    use qforge::formats::gguf::GgufFile;
    let (fx, fy) = (GgufFile::open(&x).unwrap(), GgufFile::open(&y).unwrap());
    for key in ["general.name", "general.size_label"] {
        assert_eq!(fx.metadata.get(key), fy.metadata.get(key), "{key}");
    }
    assert_eq!(fx.tensors, fy.tensors);
    for (a, b) in fx.tensors.iter().zip(&fy.tensors) {
        assert!(fx.tensor_data(a) == fy.tensor_data(b), "{}", a.name);
    }
    cleanup(&root);
}

#[test]
fn export_dequantizes_quantized_tensors() {
    if !have_goldens() {
        return;
    }
    use qforge::formats::gguf::GgufFile;
    let root = scratch("rt-q8");
    let x = root.join("x.q8_0.gguf");
    convert_cli(&golden("tiny-llama"), "q8_0", &x);
    let dir = root.join("tiny-llama");
    let o = export_cli(&x, &dir, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g = GgufFile::open(&x).unwrap();
    let st = SafetensorsFile::open(dir.join("model.safetensors")).unwrap();
    let t = g.tensor("blk.0.ffn_down.weight").unwrap();
    let mut want = vec![0f32; t.n_elements() as usize];
    qforge::quant::dequantize_rows(t.ty, g.tensor_data(t), &mut want).unwrap();
    let s = st.tensor("model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!(s.dtype, Dtype::F32);
    let mut got = vec![0f32; s.n_elements()];
    st.read_f32(s, 0, &mut got).unwrap();
    assert!(got == want, "dequantized values differ");
    cleanup(&root);
}

#[test]
fn export_refuses_what_it_cannot_do_and_leaves_nothing() {
    if !have_goldens() {
        return;
    }
    let root = scratch("rt-refuse");
    let x = root.join("x.gguf");
    convert_cli(&golden("tiny-llama"), "f16", &x);
    // A non-empty output directory is refused and kept as it was.
    let busy = root.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), b"x").unwrap();
    let o = export_cli(&x, &busy, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);
    // Bad options.
    let out = root.join("out");
    for extra in [
        &["--outtype", "q4_0"][..],
        &["--max-shard-size", "lots"][..],
    ] {
        let o = export_cli(&x, &out, extra);
        assert!(!o.status.success(), "{extra:?}");
        assert!(!out.exists());
    }
    // An architecture export does not know: named, one line, no directory.
    let mut bytes = std::fs::read(&x).unwrap();
    let at = bytes.windows(5).position(|w| w == b"llama").unwrap();
    bytes[at..at + 5].copy_from_slice(b"gemma");
    let bad = root.join("gemma.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let o = export_cli(&bad, &out, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("gemma.gguf") && err.contains("'gemma'"),
        "{err}"
    );
    assert!(!out.exists());
    let leftovers = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(leftovers, 0);
    cleanup(&root);
}

#[test]
fn export_round_trips_spm_added_tokens_and_chat_template() {
    if !have_goldens() {
        return;
    }
    // tiny-llama with a user-defined token (added_tokens.json), a special one
    // (added_tokens_decoder), a pad id and a chat template: each lands in the GGUF with its
    // own type and score, and export must put it back where the converter finds it.
    let root = scratch("rt-spm-added");
    let src = tiny_llama_dir(&root.join("src"));
    std::fs::copy(
        golden("tiny-llama/model.safetensors"),
        src.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(src.join("added_tokens.json"), r#"{"<my_tok>": 300}"#).unwrap();
    let mut tcfg = json(&src.join("tokenizer_config.json"));
    tcfg["added_tokens_decoder"] = serde_json::json!({
        "301": {"content": "<|turn|>", "special": true, "lstrip": false, "rstrip": false,
                "normalized": false, "single_word": false}
    });
    tcfg["chat_template"] =
        serde_json::json!("{% for m in messages %}<|turn|>{{ m['content'] }}{% endfor %}");
    std::fs::write(src.join("tokenizer_config.json"), tcfg.to_string()).unwrap();
    let mut cfg = json(&src.join("config.json"));
    cfg["pad_token_id"] = serde_json::json!(0);
    std::fs::write(src.join("config.json"), cfg.to_string()).unwrap();

    let x = root.join("x.f16.gguf");
    convert_cli(&src, "f16", &x);
    use qforge::formats::gguf::{GgufFile, Value as GV};
    let g = GgufFile::open(&x).unwrap();
    let types = match g.metadata.get("tokenizer.ggml.token_type") {
        Some(GV::Array(_, v)) => v.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(types[300], GV::I32(4), "user-defined");
    assert_eq!(types[301], GV::I32(3), "control");
    assert!(g.metadata.get("tokenizer.chat_template").is_some());
    assert!(g.metadata.get("tokenizer.ggml.padding_token_id").is_some());

    let dir = root.join("exp").join("tiny-llama");
    let o = export_cli(&x, &dir, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.join("added_tokens.json").is_file());
    let y = root.join("y.f16.gguf");
    convert_cli(&dir, "f16", &y);
    assert!(
        std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
        "{}",
        first_difference(&x, &y)
    );
    cleanup(&root);
}
