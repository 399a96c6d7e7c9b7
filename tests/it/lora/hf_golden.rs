//! merge_lora_hf against the golden merged-reference.safetensors (tiny-llama + the golden
//! adapter, SCALE 1): every merged tensor byte for byte, every other tensor unchanged.

use crate::support;

use qforge::formats::safetensors::{Checkpoint, SafetensorsFile};
use qforge::lora::{merge_lora_hf, AdapterSpec, MergeOptions};

#[test]
fn tiny_llama_merge_matches_the_reference_byte_for_byte() {
    let tmp = support::temp_dir("lora-hf-golden");
    let out = tmp.join("merged");
    for threads in [1, 2] {
        let _ = std::fs::remove_dir_all(&out);
        let report = merge_lora_hf(
            &support::golden("tiny-llama"),
            &[AdapterSpec::new(support::golden("lora/adapter"), 1.0)],
            &out,
            &MergeOptions {
                threads,
                ..Default::default()
            },
        )
        .unwrap();
        // 8 layers × 7 projections.
        assert_eq!(report.merged, 56);
        assert_eq!(report.replaced, 0);

        let reference =
            SafetensorsFile::open(support::golden("lora/merged-reference.safetensors")).unwrap();
        let merged = SafetensorsFile::open(out.join("model.safetensors")).unwrap();
        let base = Checkpoint::open_dir(support::golden("tiny-llama")).unwrap();
        assert_eq!(reference.tensors().len(), 56);
        let mut differing = Vec::new();
        for r in reference.tensors() {
            let m = merged
                .tensor(&r.name)
                .unwrap_or_else(|| panic!("{} missing", r.name));
            assert_eq!((m.dtype, &m.shape), (r.dtype, &r.shape), "{}", r.name);
            if merged.data(m) != reference.data(r) {
                differing.push(r.name.clone());
            }
        }
        assert!(
            differing.is_empty(),
            "threads {threads}: tensors differ from the reference: {differing:?}"
        );
        // Every tensor the adapter does not touch is the base's, byte for byte.
        let mut copied = 0;
        for loc in base.order() {
            let t = base.tensor(*loc);
            let m = merged.tensor(&t.name).unwrap();
            assert_eq!((m.dtype, &m.shape), (t.dtype, &t.shape));
            if reference.tensor(&t.name).is_none() {
                assert_eq!(merged.data(m), base.file(*loc).data(t), "{}", t.name);
                copied += 1;
            }
        }
        assert_eq!(copied, report.copied);
        assert_eq!(merged.tensors().len(), base.order().len());
        // Side files copied verbatim.
        for f in ["config.json", "tokenizer.model", "tokenizer_config.json"] {
            assert_eq!(
                std::fs::read(out.join(f)).unwrap(),
                std::fs::read(support::golden("tiny-llama").join(f)).unwrap(),
                "{f}"
            );
        }
        let mut files = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>();
        files.sort();
        assert_eq!(
            files,
            [
                "config.json",
                "model.safetensors",
                "tokenizer.model",
                "tokenizer_config.json"
            ]
        );
    }
}
