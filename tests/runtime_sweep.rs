//! The quantization sweep on a small synthetic llama: every type quantized, loaded and measured
//! against the F16 original, and the three reports written.

use qforge::eval::{perplexity, sweep, PplOptions, SweepOptions};
use qforge::model::forward::{LlamaModel, LoadOptions};
use qforge::model::synthetic::{Rng, SyntheticLlama};
use qforge::quant::GgmlType;

#[test]
fn sweep_measures_each_type_against_the_original() {
    let dir = std::env::temp_dir().join(format!("qforge-runtime-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s = SyntheticLlama {
        n_layer: 2,
        n_embd: 256,
        n_ff: 512,
        n_head: 4,
        n_head_kv: 2,
        n_vocab: 512,
        weight_type: GgmlType::F16,
        seed: 11,
    };
    let model_path = dir.join("synthetic.f16.gguf");
    s.write_gguf(&model_path).unwrap();
    let mut rng = Rng::new(1);
    let tokens: Vec<u32> = (0..256).map(|_| (rng.next_u64() % 512) as u32).collect();
    let ppl = PplOptions {
        n_ctx: 64,
        ..Default::default()
    };
    let opts = SweepOptions {
        model: model_path.clone(),
        types: vec![
            "Q8_0".into(),
            "Q4_K_M".into(),
            "q2_k".into(),
            "NOT_A_TYPE".into(),
        ],
        out_dir: dir.join("out"),
        ppl: ppl.clone(),
        imatrix: None,
        threads: 2,
        remove_files: false,
        load: LoadOptions {
            keep_quantized: true,
        },
    };
    let r = sweep(&opts, &tokens).unwrap();
    for row in &r.rows {
        let k = row.kld.as_ref();
        eprintln!(
            "{:<8} {:>9} B {:>6.3} bpw  q {:.2}s  eval {:.2}s  PPL {:>9.4}  KLD {:.6}  top {:.1}% {}",
            row.name,
            row.file_bytes,
            row.bpw,
            row.quantize_seconds,
            row.eval_seconds,
            row.ppl.as_ref().map_or(f64::NAN, |p| p.ppl),
            k.map_or(f64::NAN, |k| k.mean_kld),
            k.map_or(f64::NAN, |k| k.same_top_pct),
            row.error.as_deref().unwrap_or("")
        );
    }
    assert_eq!(r.n_chunks, 4);
    assert_eq!(r.rows.len(), 5);
    let base = &r.rows[0];
    assert_eq!(base.name, "F16");
    assert!(base.kld.is_none() && base.error.is_none());
    assert!((base.bpw - 16.0).abs() < 0.1);
    let (q8, q4, q2) = (&r.rows[1], &r.rows[2], &r.rows[3]);
    assert_eq!((q8.name.as_str(), q2.name.as_str()), ("Q8_0", "Q2_K"));
    for row in [q8, q4, q2] {
        assert!(row.error.is_none(), "{:?}", row.error);
        assert!(row.file.as_ref().unwrap().exists());
        assert!(row.file_bytes < base.file_bytes);
    }
    // Fewer bits, bigger divergence.
    let kld = |row: &qforge::eval::SweepRow| row.kld.as_ref().unwrap().mean_kld;
    assert!(q8.bpw > q4.bpw && q4.bpw > q2.bpw);
    assert!(0.0 < kld(q8) && kld(q8) < kld(q4) && kld(q4) < kld(q2));
    assert!(q8.kld.as_ref().unwrap().same_top_pct > q2.kld.as_ref().unwrap().same_top_pct);
    assert!(r.rows[4].error.as_ref().unwrap().contains("unknown"));

    // The sweep's PPL is the perplexity of the written file.
    let again = perplexity(
        &LlamaModel::load(q4.file.as_ref().unwrap()).unwrap(),
        &tokens,
        &ppl,
    )
    .unwrap();
    assert_eq!(again.ppl, q4.ppl.as_ref().unwrap().ppl);

    let csv = std::fs::read_to_string(dir.join("out/report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6);
    assert!(csv.lines().nth(2).unwrap().starts_with("Q8_0,"));
    let md = std::fs::read_to_string(dir.join("out/report.md")).unwrap();
    assert!(md.contains("| Q4_K_M |") && md.contains("failed"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/report.json")).unwrap())
            .unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 5);
    std::fs::remove_dir_all(&dir).ok();
}
