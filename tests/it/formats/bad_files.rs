//! Every file in golden/bad/ is refused with a message naming the file, a non-zero exit, and no
//! output file left behind.

use crate::support;

use std::process::Command;

use qforge::formats::gguf::GgufFile;

#[test]
fn reader_refuses_truncated_and_absurd_headers() {
    for name in ["truncated.f32.gguf", "absurd-count.gguf"] {
        let p = support::golden(&format!("bad/{name}"));
        let err = GgufFile::open(&p)
            .err()
            .unwrap_or_else(|| panic!("{name} was accepted"));
        let msg = err.to_string();
        assert!(msg.contains(name), "message does not name the file: {msg}");
    }
}

/// Run `qforge quantize` on a bad input; it must fail, name the file (and the tensor where
/// there is one) and leave no output or temporary file.
fn refuse(name: &str, ty: &str, expect_in_message: &[&str]) {
    let dir = support::temp_dir(&format!("bad-{name}-{ty}"));
    let out = dir.join("out.gguf");
    let res = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(["quantize", "--pure"])
        .arg(support::golden(&format!("bad/{name}")))
        .arg(&out)
        .arg(ty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{name} → {ty} succeeded");
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.contains(name),
        "error does not name the file: {stderr}"
    );
    for e in expect_in_message {
        assert!(last.contains(e), "error lacks '{e}': {stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "{name}: files left behind: {left:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn quantize_refuses_every_bad_file() {
    for ty in ["Q4_0", "Q4_K_M"] {
        refuse("nan.f32.gguf", ty, &["tensor '", "NaN"]);
        refuse("inf.f32.gguf", ty, &["tensor '", "inf"]);
        refuse("truncated.f32.gguf", ty, &["truncated"]);
        refuse("absurd-count.gguf", ty, &["count"]);
    }
    // The scale overflow shows only once a block is quantized to a type with an fp16 scale.
    refuse(
        "scale-overflow.f32.gguf",
        "Q4_0",
        &["tensor '", "overflows fp16"],
    );
}
