//! Every tensor of golden/tensors.f32.gguf quantized on the GPU equals the tensor bytes
//! llama-quantize wrote (golden/pure/<TYPE>.gguf and golden/pure-imatrix/<TYPE>.gguf), for every
//! type with a GPU kernel. Kernels are run directly (no self-check gate), so this holds even for
//! types whose CPU quantizer has not landed yet.

use crate::devices::Device;

use qforge::quant::GgmlType;

fn check(device: &Device, golden_file: &str, ty: GgmlType, min_cases: usize) {
    let q = device.quantizer();
    let cases = crate::support::quant_data::golden_cases(golden_file, ty);
    assert!(
        cases.len() >= min_cases,
        "{golden_file}: only {} tensors of type {ty}",
        cases.len()
    );
    let mut bad = Vec::new();
    for c in &cases {
        let mut got = vec![0u8; c.want.len()];
        q.quantize_rows_unchecked(ty, &c.x, c.n_per_row, c.qw.as_deref(), &mut got)
            .unwrap_or_else(|e| panic!("{golden_file} {}: {e}", c.name));
        if let Some(i) = got.iter().zip(&c.want).position(|(a, b)| a != b) {
            bad.push(format!(
                "{} (n_per_row {}, imatrix {}): first difference at byte {i} of {}: gpu {:#04x} golden {:#04x}",
                c.name,
                c.n_per_row,
                c.qw.is_some(),
                got.len(),
                got[i],
                c.want[i]
            ));
        }
    }
    assert!(bad.is_empty(), "{golden_file}:\n{}", bad.join("\n"));
}

device_test!(f32_matches_golden, gpu);
fn f32_matches_golden(device: Device) {
    check(&device, "pure/F32.gguf", GgmlType::F32, 10);
}

device_test!(f16_matches_golden, gpu);
fn f16_matches_golden(device: Device) {
    check(&device, "pure/F16.gguf", GgmlType::F16, 10);
}

device_test!(bf16_matches_golden, gpu);
fn bf16_matches_golden(device: Device) {
    check(&device, "pure/BF16.gguf", GgmlType::BF16, 10);
}

device_test!(q8_0_matches_golden, gpu);
fn q8_0_matches_golden(device: Device) {
    check(&device, "pure/Q8_0.gguf", GgmlType::Q8_0, 10);
    check(&device, "pure-imatrix/Q8_0.gguf", GgmlType::Q8_0, 10);
}

device_test!(q4_0_matches_golden, gpu);
fn q4_0_matches_golden(device: Device) {
    check(&device, "pure/Q4_0.gguf", GgmlType::Q4_0, 10);
    check(&device, "pure-imatrix/Q4_0.gguf", GgmlType::Q4_0, 10);
}

device_test!(q4_1_matches_golden, gpu);
fn q4_1_matches_golden(device: Device) {
    check(&device, "pure/Q4_1.gguf", GgmlType::Q4_1, 10);
    check(&device, "pure-imatrix/Q4_1.gguf", GgmlType::Q4_1, 10);
}

device_test!(q5_0_matches_golden, gpu);
fn q5_0_matches_golden(device: Device) {
    check(&device, "pure/Q5_0.gguf", GgmlType::Q5_0, 10);
    check(&device, "pure-imatrix/Q5_0.gguf", GgmlType::Q5_0, 10);
}

device_test!(q5_1_matches_golden, gpu);
fn q5_1_matches_golden(device: Device) {
    check(&device, "pure/Q5_1.gguf", GgmlType::Q5_1, 10);
    check(&device, "pure-imatrix/Q5_1.gguf", GgmlType::Q5_1, 10);
}

device_test!(q2_k_matches_golden, gpu);
fn q2_k_matches_golden(device: Device) {
    check(&device, "pure/Q2_K.gguf", GgmlType::Q2_K, 10);
    check(&device, "pure-imatrix/Q2_K.gguf", GgmlType::Q2_K, 10);
}

device_test!(q3_k_matches_golden, gpu);
/// With --pure, Q3_K_S means "every tensor Q3_K" (rows that do not block fall back).
fn q3_k_matches_golden(device: Device) {
    check(&device, "pure/Q3_K_S.gguf", GgmlType::Q3_K, 10);
    check(&device, "pure-imatrix/Q3_K_S.gguf", GgmlType::Q3_K, 10);
}

device_test!(q4_k_matches_golden, gpu);
fn q4_k_matches_golden(device: Device) {
    check(&device, "pure/Q4_K_S.gguf", GgmlType::Q4_K, 10);
    check(&device, "pure-imatrix/Q4_K_S.gguf", GgmlType::Q4_K, 10);
}

device_test!(q5_k_matches_golden, gpu);
fn q5_k_matches_golden(device: Device) {
    check(&device, "pure/Q5_K_S.gguf", GgmlType::Q5_K, 10);
    check(&device, "pure-imatrix/Q5_K_S.gguf", GgmlType::Q5_K, 10);
}

device_test!(q6_k_matches_golden, gpu);
fn q6_k_matches_golden(device: Device) {
    check(&device, "pure/Q6_K.gguf", GgmlType::Q6_K, 10);
    check(&device, "pure-imatrix/Q6_K.gguf", GgmlType::Q6_K, 10);
}

device_test!(iq4_nl_matches_golden, gpu);
fn iq4_nl_matches_golden(device: Device) {
    check(&device, "pure/IQ4_NL.gguf", GgmlType::IQ4_NL, 10);
    check(&device, "pure-imatrix/IQ4_NL.gguf", GgmlType::IQ4_NL, 10);
}

device_test!(iq4_xs_matches_golden, gpu);
fn iq4_xs_matches_golden(device: Device) {
    check(&device, "pure/IQ4_XS.gguf", GgmlType::IQ4_XS, 10);
    check(&device, "pure-imatrix/IQ4_XS.gguf", GgmlType::IQ4_XS, 10);
}

device_test!(iq3_xxs_matches_golden, gpu);
fn iq3_xxs_matches_golden(device: Device) {
    check(&device, "pure-imatrix/IQ3_XXS.gguf", GgmlType::IQ3_XXS, 10);
}

device_test!(iq3_s_matches_golden, gpu);
fn iq3_s_matches_golden(device: Device) {
    check(&device, "pure-imatrix/IQ3_S.gguf", GgmlType::IQ3_S, 10);
}

device_test!(tq1_0_matches_golden, gpu);
fn tq1_0_matches_golden(device: Device) {
    check(&device, "pure/TQ1_0.gguf", GgmlType::TQ1_0, 5);
}

device_test!(tq2_0_matches_golden, gpu);
fn tq2_0_matches_golden(device: Device) {
    check(&device, "pure/TQ2_0.gguf", GgmlType::TQ2_0, 5);
}

device_test!(q2_0_matches_golden, gpu);
/// The Q2_0 golden lives in tests/data (an absolute path replaces the shared golden folder).
fn q2_0_matches_golden(device: Device) {
    check(
        &device,
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pure/Q2_0.gguf"),
        GgmlType::Q2_0,
        10,
    );
}
