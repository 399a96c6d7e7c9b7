//! Every golden GGUF read and written back is byte-identical.

use crate::support;

use qforge::formats::gguf::{GgufFile, GgufWriter};

fn rewrite(rel: &str) {
    let src = support::golden(rel);
    let f = GgufFile::open(&src).unwrap();
    let dir = support::temp_dir(&format!("rt-{}", rel.replace('/', "_")));
    let out = dir.join("out.gguf");
    let infos: Vec<_> = f
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ty, t.ne.clone()))
        .collect();
    let mut w = GgufWriter::create(&out, &f.metadata, &infos).unwrap();
    for t in &f.tensors {
        w.write_tensor(f.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
    let a = std::fs::read(&src).unwrap();
    let b = std::fs::read(&out).unwrap();
    assert!(
        a == b,
        "{rel}: rewritten file differs ({} vs {} bytes)",
        a.len(),
        b.len()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn every_golden_gguf_round_trips() {
    let mut n = 0;
    for dir in ["", "pure", "pure-imatrix", "lora"] {
        for e in std::fs::read_dir(support::golden(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "gguf") {
                let rel = p
                    .strip_prefix(support::golden(""))
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                rewrite(&rel);
                n += 1;
            }
        }
    }
    assert!(n >= 40, "only {n} golden files found");
}
