//! SentencePiece tokenization of tiny-llama.f16.gguf against ids recorded with llama.cpp's
//! llama-tokenize (tests/runtime_data/make_spm_ids.py shows the exact command).

use crate::support;

use qforge::formats::gguf::GgufFile;
use qforge::runtime::tokenize_spm::SpmTokenizer;

fn tokenizer() -> SpmTokenizer {
    let f = GgufFile::open(support::golden("tiny-llama.f16.gguf")).unwrap();
    SpmTokenizer::from_metadata(&f.metadata).unwrap()
}

#[test]
fn ids_match_llama_tokenize() {
    let tok = tokenizer();
    let data: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/runtime_data/spm_ids.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let cases = data["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let add_special = c["add_special"].as_bool().unwrap();
        let parse_special = c["parse_special"].as_bool().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode_str(text, add_special, parse_special).unwrap();
        if got != want {
            failures.push(format!(
                "{text:?} add_special={add_special} parse_special={parse_special}\n  want {want:?}\n  got  {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pieces_decode_back_to_the_text() {
    let tok = tokenizer();
    let text = "Hello world, ünïcödé 🦙 and\ttabs";
    let ids = tok.encode_str(text, true, false).unwrap();
    assert_eq!(ids[0], tok.bos.unwrap());
    let bytes: Vec<u8> = ids.iter().flat_map(|&i| tok.token_to_piece(i)).collect();
    // The prefix space SentencePiece adds comes back as a leading space.
    assert_eq!(String::from_utf8(bytes).unwrap(), format!(" {text}"));
}

#[test]
fn empty_text_is_just_bos() {
    let tok = tokenizer();
    assert_eq!(
        tok.encode_str("", true, false).unwrap(),
        vec![tok.bos.unwrap()]
    );
    assert!(tok.encode_str("", false, false).unwrap().is_empty());
}
