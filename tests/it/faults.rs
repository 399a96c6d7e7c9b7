//! Issue 13, "nothing lost, nothing silent": one test per case of mistakes and hostile input
//! that used to lose data or fail silently. Most run the `qforge` binary as a user would, on
//! copies of the golden inputs in a scratch directory (never on the goldens themselves: a test
//! of "output == input" must not be able to destroy a shared file).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use qforge::formats::gguf::{GgufFile, GgufWriter, Metadata, Value};
use qforge::formats::imatrix::{ImatrixStats, ImportanceWeights, StatsEntry};
use qforge::formats::safetensors::{Dtype, SafetensorsWriter};
use qforge::quant::GgmlType;

// ---------------------------------------------------------------------------------------------
// Helpers (this file is self-contained on purpose).

fn shared_golden(rel: &str) -> PathBuf {
    let shared = std::env::var("QFORGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("golden").join(rel)
}

/// A fresh scratch directory for one test, removed when the test ends.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("qforge-faults-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

fn qforge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
}

fn run(args: &[&str]) -> Output {
    qforge()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("qforge runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run expecting a clean refusal: exit status 1 (not a panic's 101), and the message.
fn refused(args: &[&str]) -> String {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "qforge {args:?} should be refused with exit 1; stderr: {err}; stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A copy of the golden tiny-llama GGUF (f16, with its tokenizer) as `dir/name`.
fn gguf_model(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(shared_golden("tiny-llama.f16.gguf"), &p).unwrap();
    p
}

/// A copy of the golden tiny-llama Hugging Face checkpoint as `dir/name`.
fn hf_model(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(shared_golden("tiny-llama")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

fn sha(p: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

/// Files in `dir` whose name ends with `.tmp`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect()
}

/// Set element `index` of BF16 tensor `tensor` in a safetensors file to `value` (rounded to
/// bf16 by truncation, which is exact for the values the tests use).
fn poke_bf16(file: &Path, tensor: &str, index: usize, value: f32) {
    let mut bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header[tensor];
    assert_eq!(t["dtype"], "BF16", "{tensor}");
    let start = t["data_offsets"][0].as_u64().unwrap() as usize + 8 + n + 2 * index;
    let bits = (value.to_bits() >> 16) as u16;
    bytes[start..start + 2].copy_from_slice(&bits.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
}

fn edit_json(file: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(file, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// A PEFT adapter for tiny-llama: one rank-1 LoRA on layer 0's up_proj whose factors are all
/// `value`, and `alpha` as lora_alpha.
fn peft_adapter(dir: &Path, value: f32, alpha: serde_json::Value) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "peft_type": "LORA",
        "r": 1,
        "lora_alpha": alpha,
        "target_modules": ["up_proj"],
        "bias": "none",
        "task_type": "CAUSAL_LM",
    });
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    let a = "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight";
    let b = "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight";
    let specs = vec![
        (a.to_string(), Dtype::F32, vec![1, 256]),
        (b.to_string(), Dtype::F32, vec![512, 1]),
    ];
    let mut w =
        SafetensorsWriter::create(dir.join("adapter_model.safetensors"), &specs, None).unwrap();
    for (_, _, shape) in &specs {
        let n: usize = shape.iter().product();
        let bytes: Vec<u8> = (0..n).flat_map(|_| value.to_le_bytes()).collect();
        w.write_tensor(&bytes).unwrap();
    }
    w.finish().unwrap();
    dir.to_path_buf()
}

/// A long evaluation text (so that imatrix and perplexity run for many seconds).
fn long_text(dir: &Path) -> PathBuf {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runtime_data/ppl_text.txt"),
    )
    .unwrap();
    let mut text = String::new();
    while text.len() < 400_000 {
        text.push_str(&base);
        text.push('\n');
    }
    let p = dir.join("text.txt");
    std::fs::write(&p, text).unwrap();
    p
}

#[cfg(unix)]
fn send_signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0, "kill failed");
}

/// Wait for `child` at most `limit`; kill it and fail if it runs longer.
fn wait_at_most(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running {limit:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A synthetic llama GGUF big enough that quantizing it takes a few seconds on one thread.
fn big_model(dir: &Path) -> PathBuf {
    let p = dir.join("big.gguf");
    let o = run(&[
        "synth",
        s(&p),
        "--layers",
        "2",
        "--embd",
        "512",
        "--ff",
        "1408",
        "--vocab",
        "32000",
        "--weight-type",
        "f32",
    ]);
    assert!(o.status.success(), "synth: {}", stderr(&o));
    p
}

// ---------------------------------------------------------------------------------------------
// (1) An output that is one of the inputs is refused before any work.

#[test]
fn quantize_output_same_as_input_is_refused() {
    let d = scratch("q-same");
    let a = gguf_model(&d, "a.gguf");
    let before = sha(&a);
    let err = refused(&["quantize", s(&a), s(&a), "Q8_0"]);
    assert!(err.contains("a.gguf") && err.contains("input"), "{err}");
    assert_eq!(sha(&a), before, "the input was changed");
    assert!(temp_files(&d).is_empty());
}

#[cfg(unix)]
#[test]
fn quantize_output_hard_link_to_input_is_refused() {
    let d = scratch("q-link");
    let a = gguf_model(&d, "a.gguf");
    let link = d.join("link.gguf");
    std::fs::hard_link(&a, &link).unwrap();
    let before = sha(&a);
    let err = refused(&["quantize", s(&a), s(&link), "Q8_0"]);
    assert!(err.contains("link.gguf"), "{err}");
    assert_eq!(sha(&a), before);
}

#[test]
fn convert_output_onto_a_checkpoint_file_is_refused() {
    let d = scratch("c-same");
    let m = hf_model(&d, "m");
    let st = m.join("model.safetensors");
    let before = sha(&st);
    for outtype in ["f16", "Q8_0"] {
        let err = refused(&["convert", s(&m), "--outtype", outtype, "-o", s(&st)]);
        assert!(err.contains("model.safetensors"), "{err}");
        assert_eq!(
            sha(&st),
            before,
            "--outtype {outtype} changed the checkpoint"
        );
    }
}

#[test]
fn merge_lora_output_onto_base_or_adapter_is_refused() {
    let d = scratch("merge-same");
    // GGUF base: the output names the base file, then the adapter file.
    let base = gguf_model(&d, "base.gguf");
    let adapter = gguf_model(&d, "adapter.gguf");
    let before = sha(&base);
    let err = refused(&[
        "merge-lora",
        "--base",
        s(&base),
        "--lora",
        s(&adapter),
        "-o",
        s(&base),
        "--device",
        "cpu",
    ]);
    assert!(err.contains("base.gguf") && err.contains("base"), "{err}");
    let err = refused(&[
        "merge-lora",
        "--base",
        s(&base),
        "--lora",
        s(&adapter),
        "-o",
        s(&adapter),
        "--device",
        "cpu",
    ]);
    assert!(err.contains("adapter"), "{err}");
    assert_eq!(sha(&base), before);
    // HF base: the output directory is the base directory.
    let m = hf_model(&d, "m");
    let ad = peft_adapter(&d.join("ad"), 0.01, serde_json::json!(1));
    let err = refused(&[
        "merge-lora",
        "--base",
        s(&m),
        "--lora",
        s(&ad),
        "-o",
        s(&m),
        "--device",
        "cpu",
    ]);
    assert!(err.contains("base"), "{err}");
    let err = refused(&[
        "merge-lora",
        "--base",
        s(&m),
        "--lora",
        s(&ad),
        "-o",
        s(&ad),
        "--device",
        "cpu",
    ]);
    assert!(err.contains("adapter"), "{err}");
}

#[test]
fn lora_to_gguf_output_onto_a_base_or_adapter_file_is_refused() {
    let d = scratch("l2g-same");
    let m = hf_model(&d, "m");
    let ad = peft_adapter(&d.join("ad"), 0.01, serde_json::json!(1));
    let st = m.join("model.safetensors");
    let before = sha(&st);
    let err = refused(&["lora-to-gguf", s(&ad), "--base", s(&m), "-o", s(&st)]);
    assert!(err.contains("model.safetensors"), "{err}");
    assert_eq!(sha(&st), before);
    let cfg = ad.join("adapter_config.json");
    let err = refused(&["lora-to-gguf", s(&ad), "--base", s(&m), "-o", s(&cfg)]);
    assert!(err.contains("adapter_config.json"), "{err}");
}

#[test]
fn imatrix_output_onto_model_or_text_is_refused() {
    let d = scratch("imx-same");
    let m = gguf_model(&d, "m.gguf");
    let text = long_text(&d);
    let before = (sha(&m), sha(&text));
    let err = refused(&["imatrix", "-m", s(&m), "-f", s(&text), "-o", s(&m)]);
    assert!(err.contains("model"), "{err}");
    let err = refused(&["imatrix", "-m", s(&m), "-f", s(&text), "-o", s(&text)]);
    assert!(err.contains("text"), "{err}");
    assert_eq!((sha(&m), sha(&text)), before);
}

#[test]
fn perplexity_kld_base_onto_model_is_refused() {
    let d = scratch("ppl-same");
    let m = gguf_model(&d, "m.gguf");
    let text = long_text(&d);
    let before = sha(&m);
    let err = refused(&[
        "perplexity",
        "-m",
        s(&m),
        "-f",
        s(&text),
        "--kl-divergence-base",
        s(&m),
        "--chunks",
        "1",
    ]);
    assert!(err.contains("model"), "{err}");
    assert_eq!(sha(&m), before, "the model became a logits file");
}

// ---------------------------------------------------------------------------------------------
// (2) Signals, stale temporary files, directory outputs.

/// Quantize a big model on one thread, send `sig` once its temporary output exists, and check
/// that it stops promptly, exits 130, and leaves neither the output nor a temporary file.
#[cfg(unix)]
fn quantize_stops_on(sig: i32, tag: &str) {
    let d = scratch(tag);
    let big = big_model(&d);
    let out_dir = d.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("big.Q6_K.gguf");
    let mut child = qforge()
        .args(["quantize", s(&big), s(&out), "Q6_K", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while temp_files(&out_dir).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "quantize ended before its temporary file was seen"
        );
        assert!(t0.elapsed() < Duration::from_secs(60), "no temporary file");
        std::thread::sleep(Duration::from_millis(5));
    }
    send_signal(&child, sig);
    let st = wait_at_most(&mut child, Duration::from_secs(5), "quantize");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(st.code(), Some(130), "status {st:?}; stderr: {err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(
        temp_files(&out_dir).is_empty(),
        "{:?}",
        temp_files(&out_dir)
    );
    assert!(!out.exists());
}

#[cfg(unix)]
#[test]
fn sigterm_removes_the_temporary_output() {
    quantize_stops_on(libc::SIGTERM, "sigterm");
}

#[cfg(unix)]
#[test]
fn sighup_removes_the_temporary_output() {
    quantize_stops_on(libc::SIGHUP, "sighup");
}

/// Start an eval command on a long text, interrupt it after `wait`, and check it stops.
#[cfg(unix)]
fn eval_stops_on_sigint(args: &[&str], out: &Path) {
    let mut child = qforge()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "{args:?} ended before the signal"
    );
    send_signal(&child, libc::SIGINT);
    let st = wait_at_most(&mut child, Duration::from_secs(4), args[0]);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(st.code(), Some(130), "status {st:?}; stderr: {err}");
    assert!(!out.exists(), "{} was written", out.display());
    assert!(temp_files(out.parent().unwrap()).is_empty());
}

#[cfg(unix)]
#[test]
fn imatrix_stops_on_sigint() {
    let d = scratch("imx-int");
    let m = gguf_model(&d, "m.gguf");
    let text = long_text(&d);
    let out = d.join("imatrix.gguf");
    eval_stops_on_sigint(
        &[
            "imatrix",
            "-m",
            s(&m),
            "-f",
            s(&text),
            "-o",
            s(&out),
            "-c",
            "128",
            "-t",
            "1",
        ],
        &out,
    );
}

#[cfg(unix)]
#[test]
fn perplexity_stops_on_sigint() {
    let d = scratch("ppl-int");
    let m = gguf_model(&d, "m.gguf");
    let text = long_text(&d);
    let out = d.join("base.logits");
    eval_stops_on_sigint(
        &[
            "perplexity",
            "-m",
            s(&m),
            "-f",
            s(&text),
            "-c",
            "128",
            "-t",
            "1",
            "--kl-divergence-base",
            s(&out),
        ],
        &out,
    );
}

#[test]
fn stale_temporary_file_of_a_dead_process_is_removed() {
    let d = scratch("stale");
    let a = gguf_model(&d, "a.gguf");
    let out = d.join("out.gguf");
    // No process has this id (above Linux's pid_max); one that is alive must be left alone.
    let stale = d.join("out.gguf.4294967295.tmp");
    let alive = d.join(format!("out.gguf.{}.tmp", std::process::id()));
    std::fs::write(&stale, b"left by a killed run").unwrap();
    std::fs::write(&alive, b"another run in progress").unwrap();
    let o = run(&["quantize", s(&a), s(&out), "Q8_0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    if cfg!(target_os = "linux") {
        assert!(!stale.exists(), "stale temporary file kept");
        assert!(
            stderr(&o).contains("out.gguf.4294967295.tmp"),
            "{}",
            stderr(&o)
        );
    }
    assert!(
        alive.exists(),
        "a live process's temporary file was removed"
    );
    assert!(out.exists());
}

#[test]
fn output_that_is_a_directory_is_refused_before_the_work() {
    let d = scratch("outdir");
    let a = gguf_model(&d, "a.gguf");
    let out = d.join("out.gguf");
    std::fs::create_dir_all(&out).unwrap();
    let o = run(&["quantize", s(&a), s(&out), "Q8_0"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("directory"), "{err}");
    // Refused before the work: no tensor table was printed.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(!stdout.contains("token_embd"), "worked first: {stdout}");
    let m = hf_model(&d, "m");
    let err = refused(&["lora-to-gguf", s(&m), "--base", s(&m), "-o", s(&out)]);
    assert!(err.contains("directory"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// (3) Non-finite output from finite input is refused by every writer.

#[test]
fn convert_f16_overflow_is_refused() {
    let d = scratch("c-f16");
    let m = hf_model(&d, "m");
    poke_bf16(
        &m.join("model.safetensors"),
        "model.layers.0.mlp.up_proj.weight",
        5,
        1e6,
    );
    let out = d.join("m.f16.gguf");
    let err = refused(&["convert", s(&m), "--outtype", "f16", "-o", s(&out)]);
    assert!(
        err.contains("blk.0.ffn_up.weight")
            && err.contains("element 5")
            && err.contains("m.f16.gguf"),
        "{err}"
    );
    assert!(!out.exists());
    assert!(temp_files(&d).is_empty());
}

#[test]
fn convert_q8_0_scale_overflow_is_refused() {
    let d = scratch("c-q8");
    let m = hf_model(&d, "m");
    poke_bf16(
        &m.join("model.safetensors"),
        "model.layers.0.mlp.up_proj.weight",
        40,
        1e10,
    );
    let out = d.join("m.q8.gguf");
    let err = refused(&["convert", s(&m), "--outtype", "q8_0", "-o", s(&out)]);
    assert!(
        err.contains("blk.0.ffn_up.weight") && err.contains("scale") && err.contains("32"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn convert_nan_weight_is_refused_in_f16_bf16_and_q8_0() {
    let d = scratch("c-nan");
    let m = hf_model(&d, "m");
    poke_bf16(
        &m.join("model.safetensors"),
        "model.layers.1.mlp.down_proj.weight",
        7,
        f32::NAN,
    );
    for outtype in ["f16", "bf16", "q8_0", "f32"] {
        let out = d.join(format!("m.{outtype}.gguf"));
        let err = refused(&["convert", s(&m), "--outtype", outtype, "-o", s(&out)]);
        assert!(err.contains("blk.1.ffn_down.weight"), "{outtype}: {err}");
        assert!(err.contains("NaN"), "{outtype}: {err}");
        assert!(!out.exists());
    }
}

#[test]
fn convert_with_lora_overflow_is_refused() {
    let d = scratch("c-lora");
    let m = hf_model(&d, "m");
    // Rank 1, factors of 300 over 256 columns: the update is ~2.3e7 per element, finite in
    // f32 and +inf in f16.
    let ad = peft_adapter(&d.join("ad"), 300.0, serde_json::json!(1));
    let out = d.join("merged.f16.gguf");
    let err = refused(&[
        "convert",
        s(&m),
        "--lora",
        s(&ad),
        "--outtype",
        "f16",
        "-o",
        s(&out),
        "--device",
        "cpu",
    ]);
    assert!(err.contains("blk.0.ffn_up.weight"), "{err}");
    assert!(err.contains("element"), "{err}");
    assert!(!out.exists());
}

#[test]
fn lora_alpha_beyond_f32_is_refused() {
    let d = scratch("alpha");
    let m = hf_model(&d, "m");
    let ad = peft_adapter(&d.join("ad"), 0.01, serde_json::json!(1e39));
    let out = d.join("ad.gguf");
    let err = refused(&["lora-to-gguf", s(&ad), "--base", s(&m), "-o", s(&out)]);
    assert!(err.contains("lora_alpha"), "{err}");
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------------------------
// (4) No panics.

#[test]
fn alignment_override_zero_is_refused_not_a_panic() {
    let d = scratch("align0");
    let a = gguf_model(&d, "a.gguf");
    let out = d.join("out.gguf");
    let err = refused(&[
        "quantize",
        "--override-kv",
        "general.alignment=int:0",
        s(&a),
        s(&out),
        "Q8_0",
    ]);
    assert!(err.contains("general.alignment"), "{err}");
    assert!(!out.exists());
}

#[cfg(unix)]
#[test]
fn closed_stdout_ends_quietly() {
    use std::os::fd::FromRawFd;
    let d = scratch("epipe");
    let a = gguf_model(&d, "a.gguf");
    // A pipe whose read end is closed before qforge writes a byte: every write is EPIPE.
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) fills two new descriptors; each is owned exactly once below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    let write_end = unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[1]) };
    let o = qforge()
        .args(["info", s(&a)])
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_ne!(o.status.code(), Some(101), "panicked: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("failed printing"),
        "{err}"
    );
}

#[test]
fn huge_thread_count_is_capped() {
    let d = scratch("threads");
    let a = gguf_model(&d, "a.gguf");
    let out = d.join("out.gguf");
    let t0 = Instant::now();
    let o = run(&["quantize", s(&a), s(&out), "Q8_0", "100000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("capped"), "{}", stderr(&o));
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    assert!(out.exists());
}

// ---------------------------------------------------------------------------------------------
// (5) Values that must be refused, not written.

#[test]
fn overrides_that_make_unusable_files_are_refused() {
    let d = scratch("overrides");
    let a = gguf_model(&d, "a.gguf");
    let out = d.join("out.gguf");
    for (kv, expect) in [
        ("general.alignment=int:3", "general.alignment"),
        ("general.alignment=str:32", "general.alignment"),
        ("general.architecture=int:5", "general.architecture"),
        ("=int:1", "empty"),
        ("llama.context_length=int:-1", "-1"),
        ("llama.block_count=str:eight", "llama.block_count"),
    ] {
        let err = refused(&["quantize", "--override-kv", kv, s(&a), s(&out), "Q8_0"]);
        assert!(err.contains(expect), "{kv}: {err}");
        assert!(!out.exists(), "{kv} was written");
    }
}

#[test]
fn chunks_zero_is_refused() {
    let d = scratch("chunks0");
    let m = gguf_model(&d, "m.gguf");
    let text = long_text(&d);
    let err = refused(&["perplexity", "-m", s(&m), "-f", s(&text), "--chunks", "0"]);
    assert!(err.contains("--chunks 0"), "{err}");
    let out = d.join("imatrix.gguf");
    let err = refused(&[
        "imatrix",
        "-m",
        s(&m),
        "-f",
        s(&text),
        "--chunks",
        "0",
        "-o",
        s(&out),
    ]);
    assert!(err.contains("--chunks 0"), "{err}");
    assert!(!out.exists());
}

#[test]
fn hyper_parameters_that_make_nan_perplexity_are_refused() {
    let d = scratch("nanppl");
    let a = gguf_model(&d, "a.gguf");
    let text = long_text(&d);
    for (kv, key) in [
        (
            "llama.attention.layer_norm_rms_epsilon=float:nan",
            "layer_norm_rms_epsilon",
        ),
        ("llama.rope.freq_base=float:0", "rope.freq_base"),
    ] {
        let bad = d.join("bad.gguf");
        let o = run(&["quantize", "--override-kv", kv, s(&a), s(&bad), "COPY"]);
        assert!(o.status.success(), "{kv}: {}", stderr(&o));
        let err = refused(&[
            "perplexity",
            "-m",
            s(&bad),
            "-f",
            s(&text),
            "-c",
            "128",
            "--chunks",
            "2",
        ]);
        assert!(err.contains(key), "{kv}: {err}");
        let out = d.join("im.gguf");
        let err = refused(&[
            "imatrix",
            "-m",
            s(&bad),
            "-f",
            s(&text),
            "-c",
            "128",
            "--chunks",
            "2",
            "-o",
            s(&out),
        ]);
        assert!(
            err.contains(key) && !err.contains("non-finite values detected"),
            "{kv}: {err}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn prune_layers_out_of_range_or_all_is_refused() {
    let d = scratch("prune");
    let a = gguf_model(&d, "a.gguf");
    let out = d.join("out.gguf");
    let err = refused(&["quantize", "--prune-layers", "8", s(&a), s(&out), "Q8_0"]);
    assert!(err.contains("--prune-layers") && err.contains('8'), "{err}");
    let err = refused(&[
        "quantize",
        "--prune-layers",
        "0,1,2,3,4,5,6,7",
        s(&a),
        s(&out),
        "Q8_0",
    ]);
    assert!(err.contains("all"), "{err}");
    assert!(!out.exists());
}

/// A three-tensor GGUF written by our writer (8 f32 each), for the layout tests to damage.
fn small_gguf(path: &Path, md: &Metadata, names: [&str; 2]) {
    let specs: Vec<_> = [names[0], names[1], "third"]
        .iter()
        .map(|n| (n.to_string(), GgmlType::F32, vec![8u64]))
        .collect();
    let mut w = GgufWriter::create(path, md, &specs).unwrap();
    for _ in 0..3 {
        w.write_tensor(&[0u8; 32]).unwrap();
    }
    w.finish().unwrap();
}

/// Overwrite the offset field of tensor `name` (the u64 after its type id).
fn poke_offset(path: &Path, name: &str, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    let pos = b
        .windows(name.len())
        .rposition(|w| w == name.as_bytes())
        .unwrap();
    // name, n_dims u32, one dim u64, type u32, offset u64
    let at = pos + name.len() + 4 + 8 + 4;
    b[at..at + 8].copy_from_slice(&offset.to_le_bytes());
    std::fs::write(path, b).unwrap();
}

#[test]
fn gguf_layouts_llama_cpp_rejects_are_refused() {
    let d = scratch("layouts");
    let md = Metadata::new();
    // Offsets: unaligned, overlapping, with a gap.
    for (tag, offset) in [("unaligned", 36u64), ("overlap", 0), ("gap", 64)] {
        let p = d.join(format!("{tag}.gguf"));
        small_gguf(&p, &md, ["first", "second"]);
        poke_offset(&p, "second", offset);
        let err = GgufFile::open(&p).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("second") && e.contains("offset")),
            "{tag}: {err:?}"
        );
    }
    // A 64-byte tensor name (ggml keeps 63 and a NUL).
    let p = d.join("longname.gguf");
    let long = "x".repeat(64);
    small_gguf(&p, &md, [&long, "second"]);
    let err = GgufFile::open(&p).err().map(|e| e.to_string());
    assert!(err.as_deref().is_some_and(|e| e.contains("63")), "{err:?}");
    // general.alignment that is not a u32.
    let mut md64 = Metadata::new();
    md64.set("general.alignment", Value::U64(32));
    let p = d.join("align64.gguf");
    small_gguf(&p, &md64, ["first", "second"]);
    let err = GgufFile::open(&p).err().map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("general.alignment")),
        "{err:?}"
    );
    // And the CLI refuses to copy such a file through.
    let out = d.join("copy.gguf");
    let err = refused(&["quantize", s(&d.join("gap.gguf")), s(&out), "COPY"]);
    assert!(err.contains("offset"), "{err}");
    assert!(!out.exists());
}

#[test]
fn imatrix_matching_no_tensor_is_refused() {
    let d = scratch("imx-none");
    let a = gguf_model(&d, "a.gguf");
    let mut stats = ImatrixStats::new(512);
    stats.entries.insert(
        "some.other.model.weight".to_string(),
        StatsEntry {
            values: vec![1.0; 256],
            counts: vec![512],
        },
    );
    stats.chunk_count = 1;
    let im = d.join("other.imatrix.gguf");
    stats.write_gguf(&im).unwrap();
    let out = d.join("out.gguf");
    let err = refused(&["quantize", "--imatrix", s(&im), s(&a), s(&out), "Q4_K_M"]);
    assert!(err.contains("no entry"), "{err}");
    assert!(!out.exists());
}

#[test]
fn imatrix_missing_some_tensors_says_so() {
    let d = scratch("imx-some");
    let a = gguf_model(&d, "a.gguf");
    let mut stats = ImatrixStats::new(512);
    stats.entries.insert(
        "blk.0.attn_q.weight".to_string(),
        StatsEntry {
            values: vec![1.0; 256],
            counts: vec![512],
        },
    );
    stats.chunk_count = 1;
    let im = d.join("partial.imatrix.gguf");
    stats.write_gguf(&im).unwrap();
    let out = d.join("out.gguf");
    let o = run(&["quantize", "--imatrix", s(&im), s(&a), s(&out), "Q4_K_M"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("the imatrix has no entry for") && stdout.contains("blk."),
        "{stdout}"
    );
}

#[test]
fn dat_imatrix_with_negative_call_count_is_refused() {
    let d = scratch("dat-ncall");
    let mut b = Vec::new();
    b.extend_from_slice(&1i32.to_le_bytes());
    let name = b"blk.0.attn_q.weight";
    b.extend_from_slice(&(name.len() as i32).to_le_bytes());
    b.extend_from_slice(name);
    b.extend_from_slice(&(-3i32).to_le_bytes()); // ncall
    b.extend_from_slice(&4i32.to_le_bytes()); // nval
    for _ in 0..4 {
        b.extend_from_slice(&1f32.to_le_bytes());
    }
    let p = d.join("bad.dat");
    std::fs::write(&p, &b).unwrap();
    let err = ImportanceWeights::load(&p).err().map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("-3") && e.contains("blk.0.attn_q.weight")),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// (6) Memory bounded by the file, not by a config value.

#[test]
fn config_layer_count_beyond_the_tensors_is_refused() {
    let d = scratch("layers");
    let m = hf_model(&d, "m");
    let out = d.join("m.gguf");
    for n in [100_000u64, 9] {
        edit_json(&m.join("config.json"), |v| {
            v["num_hidden_layers"] = n.into()
        });
        let t0 = Instant::now();
        let err = refused(&["convert", s(&m), "--outtype", "f16", "-o", s(&out)]);
        assert!(err.contains("num_hidden_layers"), "{n}: {err}");
        assert!(!err.contains("'n_layers'"), "{n}: names another key: {err}");
        assert!(t0.elapsed() < Duration::from_secs(20));
    }
    assert!(!out.exists());
}

#[test]
fn synth_with_huge_dimensions_is_refused() {
    let d = scratch("synth");
    let out = d.join("huge.gguf");
    let err = refused(&[
        "synth",
        s(&out),
        "--embd",
        "1048576",
        "--vocab",
        "1048576",
        "--ff",
        "4194304",
    ]);
    assert!(err.contains("elements"), "{err}");
    assert!(!out.exists());
    assert!(temp_files(&d).is_empty());
}

// ---------------------------------------------------------------------------------------------
// (7) Messages.

#[test]
fn os_error_is_printed_once() {
    let d = scratch("oserr");
    let missing = d.join("missing.gguf");
    let err = refused(&["info", s(&missing)]);
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    assert!(err.contains("missing.gguf"), "{err}");
}

#[test]
fn string_key_is_not_called_missing() {
    let d = scratch("strkey");
    let a = gguf_model(&d, "a.gguf");
    let bad = d.join("bad.gguf");
    // A string block count in the input (written with the writer, as a hostile file would be).
    let f = GgufFile::open(&a).unwrap();
    let mut md = f.metadata.clone();
    md.set("llama.block_count", Value::Str("eight".into()));
    let specs: Vec<_> = f
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
        .collect();
    let mut w = GgufWriter::create(&bad, &md, &specs).unwrap();
    for t in &f.tensors {
        w.write_tensor(f.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
    let out = d.join("out.gguf");
    let err = refused(&["quantize", s(&bad), s(&out), "Q8_0"]);
    assert!(err.contains("llama.block_count"), "{err}");
    assert!(!err.contains("missing"), "{err}");
}

#[test]
fn output_path_checks_do_not_refuse_ordinary_jobs() {
    // The default outputs land beside or inside the inputs: those must keep working.
    let d = scratch("ordinary");
    let m = hf_model(&d, "m");
    let o = run(&["convert", s(&m), "--outtype", "f16"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["convert", s(&m), "--outtype", "f16"]);
    assert!(
        o.status.success(),
        "re-running into the same directory: {}",
        stderr(&o)
    );
}

#[test]
fn a_directory_or_device_as_gguf_is_named_as_such() {
    let d = scratch("nodev");
    let err = refused(&["info", s(&d)]);
    assert!(
        err.contains("directory") && !err.contains("No such device"),
        "{err}"
    );
    if Path::new("/dev/zero").exists() {
        let err = refused(&["info", "/dev/zero"]);
        assert!(
            err.contains("not a regular file") && !err.contains("No such device"),
            "{err}"
        );
    }
}

#[test]
fn iq_mix_without_an_imatrix_names_a_tensor_that_needs_one() {
    // Every IQ type now has a quantizer: the refusal is for the missing imatrix, before any output.
    let d = scratch("iq");
    let a = gguf_model(&d, "a.gguf");
    let out = d.join("out.gguf");
    let err = refused(&["quantize", s(&a), s(&out), "IQ3_XXS"]);
    assert!(!err.contains("not supported yet"), "{err}");
    assert!(
        err.contains("--imatrix") && err.contains("tensor '"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn iq2_without_imatrix_weights_is_refused_before_any_output() {
    let d = scratch("iq2");
    let a = gguf_model(&d, "a.gguf");
    let out = d.join("out.gguf");
    // The mix rules ask for an imatrix (llama-quantize does too)...
    let err = refused(&["quantize", s(&a), s(&out), "IQ2_XXS"]);
    assert!(err.contains("--imatrix"), "{err}");
    assert!(!out.exists());
    // ...and where they do not (the token embeddings), the quantizer still cannot run without
    // one: llama.cpp aborts there, qforge refuses.
    let err = refused(&[
        "quantize",
        "--token-embedding-type",
        "iq2_xs",
        s(&a),
        s(&out),
        "Q4_0",
    ]);
    assert!(
        err.contains("token_embd.weight") && err.contains("IQ2_XS") && err.contains("--imatrix"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn info_help_does_not_promise_safetensors() {
    let o = run(&["--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    let line = help
        .lines()
        .find(|l| l.trim_start().starts_with("info"))
        .expect("info in the command list");
    assert!(!line.contains("safetensors"), "{line}");
    let err = refused(&[
        "info",
        s(&Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")),
    ]);
    assert!(err.contains("not a GGUF file"), "{err}");
}

#[test]
fn merge_lora_into_a_non_empty_directory_is_refused_before_the_work() {
    let d = scratch("merge-nonempty");
    let m = hf_model(&d, "m");
    let ad = peft_adapter(&d.join("ad"), 0.01, serde_json::json!(1));
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"mine").unwrap();
    let err = refused(&[
        "merge-lora",
        "--base",
        s(&m),
        "--lora",
        s(&ad),
        "-o",
        s(&out),
        "--device",
        "cpu",
    ]);
    // Not the rename failing after the merge ("Directory not empty (os error 39)").
    assert!(err.contains("exists and is not empty"), "{err}");
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"mine");
    assert!(temp_files(&d).is_empty(), "{:?}", temp_files(&d));
}

// ---------------------------------------------------------------------------------------------
// (8) Regressions found by the fuzz targets in fuzz/.

/// fuzz/gguf_parse, crash-428316f7: a tensor whose row count overflows u64 panicked (overflow
/// check) while its size was computed; in a release build the product wrapped instead.
#[test]
fn fuzz_gguf_shape_whose_size_overflows_is_refused() {
    let hex = "474755460300000001000000000000000000000000000000000000000000000003000000000000\
               001400000000000000474755460300000001000000000000000000000000000000000100000000\
               000000030000000000080000000000000000000000000000000000000000";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let d = scratch("fuzz-gguf");
    let p = d.join("crash.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let r = std::panic::catch_unwind(|| GgufFile::open(&p).map(|_| ()));
    let err = r
        .expect("the parser panicked")
        .expect_err("accepted an overflowing shape");
    assert!(err.to_string().contains("crash.gguf"), "{err}");
}

/// fuzz/tokenizer_json, crash-21feff26: the tokenizers crate panicked (`expect("Helper")`) on
/// a tokenizer.json with a syntax error inside "decoder", and on a decoder of the wrong shape.
#[test]
fn fuzz_tokenizer_json_the_library_panics_on_is_refused() {
    let crash = r#"{"version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}, "post_processor": null, "decoder": trim_offsdel": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": fjlse, "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}"#;
    let wrong_shape = crash
        .replace(
            "\"decoder\": trim_offsdel\": {",
            "\"decoder\": 5, \"model\": {",
        )
        .replace("fjlse", "false");
    for (tag, text) in [("crash", crash.to_string()), ("shape", wrong_shape)] {
        let d = scratch(&format!("fuzz-tok-{tag}"));
        std::fs::write(d.join("tokenizer.json"), text).unwrap();
        let r = std::panic::catch_unwind(|| {
            qforge::convert::vocab::bpe::vocab_base(&d, None).map(|_| ())
        });
        let err = r
            .unwrap_or_else(|_| panic!("{tag}: the reader panicked"))
            .expect_err("accepted a broken tokenizer.json");
        assert!(err.to_string().contains("tokenizer.json"), "{tag}: {err}");
    }
}
