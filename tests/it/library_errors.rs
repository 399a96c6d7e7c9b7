//! Typed errors below the CLI: each layer returns its own `thiserror` enum, the variants carry
//! the names a message needs, and a chain of causes prints every cause exactly once.

use std::borrow::Cow;
use std::error::Error;
use std::path::{Path, PathBuf};

use qforge::eval::kld::read_scored_logits;
use qforge::eval::EvalError;
use qforge::formats::gguf::Metadata;
use qforge::formats::{SourceError, SourceTensor, TensorSource};
use qforge::ggml::GgmlType;
use qforge::pipeline::quantize::parse_override;
use qforge::pipeline::PipelineError;
use qforge::runtime::error::error_chain_text;
use qforge::runtime::forward::LlamaModel;
use qforge::runtime::synthetic::{SyntheticLlama, SyntheticSource};
use qforge::runtime::tokenize_spm::SpmTokenizer;
use qforge::runtime::{RuntimeError, TokenizeError};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qforge-liberr-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How many times `needle` occurs in `hay`.
fn occurrences(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_library_code_uses_anyhow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let cli = src.join("cli");
    let mut bad = Vec::new();
    for f in files
        .iter()
        .filter(|f| !f.starts_with(&cli) && !f.ends_with("main.rs"))
    {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("anyhow") {
                bad.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(!files.is_empty());
    assert!(bad.is_empty(), "anyhow below the CLI:\n{}", bad.join("\n"));
}

#[test]
fn kv_override_errors_name_the_argument() {
    let e = parse_override("general.name").unwrap_err();
    assert!(matches!(e, PipelineError::MalformedOverride { ref arg, .. } if arg == "general.name"));
    assert_eq!(
        e.to_string(),
        "malformed KV override 'general.name': expected KEY=TYPE:VALUE"
    );

    let e = parse_override("answer=int:forty-two").unwrap_err();
    assert!(matches!(e, PipelineError::OverrideInt { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "KV override 'answer=int:forty-two': not an integer"
    );
    let cause = e
        .source()
        .expect("the parse error is the cause")
        .to_string();
    let chain = error_chain_text(&e);
    assert_eq!(
        chain,
        format!("KV override 'answer=int:forty-two': not an integer: {cause}")
    );
    assert_eq!(occurrences(&chain, &cause), 1);

    let e = parse_override("flag=bool:maybe").unwrap_err();
    assert!(matches!(e, PipelineError::OverrideBool { .. }));
    assert_eq!(
        e.to_string(),
        "invalid boolean value for KV override 'flag=bool:maybe'"
    );

    // A well-formed override still parses.
    let (key, _) = parse_override("general.name=str:tiny").unwrap();
    assert_eq!(key, "general.name");
}

#[test]
fn opening_a_missing_model_names_the_file_once() {
    let dir = scratch("missing");
    let path = dir.join("absent.gguf");
    let e = LlamaModel::load(&path).unwrap_err();
    match &e {
        RuntimeError::Open { path: p, .. } => assert_eq!(p, &path),
        other => panic!("expected Open, got {other:?}"),
    }
    assert_eq!(e.to_string(), format!("opening {}", path.display()));
    let cause = e.source().expect("the GGUF error is the cause").to_string();
    let chain = error_chain_text(&e);
    assert!(
        chain.starts_with(&format!("opening {}: ", path.display())),
        "{chain}"
    );
    assert_eq!(occurrences(&chain, &cause), 1, "{chain}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A source whose tensor `fail_at` cannot be produced.
struct FailingSource {
    inner: SyntheticSource,
    fail_at: usize,
}

impl TensorSource for FailingSource {
    fn describe(&self) -> String {
        "a source that fails".into()
    }
    fn metadata(&self) -> &Metadata {
        self.inner.metadata()
    }
    fn tensors(&self) -> &[SourceTensor] {
        self.inner.tensors()
    }
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, SourceError> {
        if index == self.fail_at {
            return Err(SourceError::produce(std::io::Error::other(
                "the disk went away",
            )));
        }
        self.inner.tensor_bytes(index)
    }
}

#[test]
fn a_failing_tensor_source_passes_its_cause_through_unchanged() {
    let inner = SyntheticLlama::tiny(GgmlType::F32, 7).source();
    assert!(LlamaModel::from_source(&inner).is_ok());
    let source = FailingSource { inner, fail_at: 0 };
    let e = LlamaModel::from_source(&source).unwrap_err();
    assert!(matches!(e, RuntimeError::Load { ref what, .. } if what == "a source that fails"));
    // The transparent source error shows the producer's message, not a wrapper of its own.
    assert_eq!(
        error_chain_text(&e),
        "loading a source that fails: the disk went away"
    );
}

#[test]
fn tokenizer_errors_name_the_key() {
    let e = SpmTokenizer::from_metadata(&Metadata::new()).unwrap_err();
    assert!(matches!(e, TokenizeError::NoModel));
    assert_eq!(e.to_string(), "no tokenizer.ggml.model in the file");

    let mut md = SyntheticLlama::tiny(GgmlType::F32, 1).metadata();
    md.set(
        "tokenizer.ggml.model",
        qforge::formats::gguf::Value::Str("bert".into()),
    );
    let e = SpmTokenizer::from_metadata(&md).unwrap_err();
    assert!(matches!(e, TokenizeError::NotSpm { ref model } if model == "bert"));
    assert_eq!(
        e.to_string(),
        "tokenizer model 'bert' is not supported yet (only SentencePiece 'llama')"
    );
}

#[test]
fn logits_file_errors_name_the_file() {
    let dir = scratch("logits");
    let missing = dir.join("none.logits");
    let e = read_scored_logits(&missing).unwrap_err();
    assert!(
        matches!(
            e,
            EvalError::Io {
                action: "reading",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.source().is_some());
    assert_eq!(e.to_string(), format!("reading {}", missing.display()));

    let junk = dir.join("junk.logits");
    std::fs::write(&junk, b"not logits at all, just some bytes").unwrap();
    let e = read_scored_logits(&junk).unwrap_err();
    assert!(matches!(e, EvalError::BadLogitsFile { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: not a qforge logits file (written by --kl-divergence-base)",
            junk.display()
        )
    );
    std::fs::remove_dir_all(&dir).ok();
}
