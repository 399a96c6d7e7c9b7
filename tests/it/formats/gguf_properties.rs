//! Property tests: any metadata and tensor set written by GgufWriter reads back equal, and the
//! reader never panics on arbitrary or corrupted bytes.

use crate::support;

use proptest::prelude::*;
use qforge::formats::gguf::{GgufFile, GgufWriter, Metadata, Value, ValueType};
use qforge::quant::GgmlType;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<f32>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        ".{0,12}".prop_map(Value::Str),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<f64>()
            .prop_filter("NaN", |f| !f.is_nan())
            .prop_map(Value::F64),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        1 => prop::collection::vec(any::<u32>(), 0..20)
            .prop_map(|v| Value::Array(ValueType::U32, v.into_iter().map(Value::U32).collect())),
        1 => prop::collection::vec(".{0,6}", 0..10)
            .prop_map(|v| Value::Array(ValueType::Str, v.into_iter().map(Value::Str).collect())),
    ]
}

fn tensor() -> impl Strategy<Value = (GgmlType, Vec<u64>)> {
    let ty = prop::sample::select(vec![
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ]);
    (ty, 1u64..4, prop::collection::vec(1u64..5, 0..3)).prop_map(|(ty, blocks, rest)| {
        let mut ne = vec![blocks * ty.block_size() as u64];
        ne.extend(rest);
        (ty, ne)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn write_then_read_is_identity(
        kvs in prop::collection::btree_map("[a-z.]{1,16}", value(), 0..12),
        tensors in prop::collection::vec(tensor(), 0..6),
        align_pow in 0u32..7,
        seed in any::<u8>(),
    ) {
        let mut md = Metadata::new();
        for (k, v) in &kvs {
            if k != "general.alignment" {
                md.set(k, v.clone());
            }
        }
        md.set("general.alignment", Value::U32(1 << (align_pow + 2)));
        let infos: Vec<(String, GgmlType, Vec<u64>)> = tensors
            .iter()
            .enumerate()
            .map(|(i, (ty, ne))| (format!("t{i}.weight"), *ty, ne.clone()))
            .collect();
        let dir = support::temp_dir(&format!("prop-{seed}-{}", kvs.len()));
        let path = dir.join("x.gguf");
        let mut w = GgufWriter::create(&path, &md, &infos).unwrap();
        let mut datas = Vec::new();
        for (i, (_, ty, ne)) in infos.iter().enumerate() {
            let n = ty.row_size(ne[0]).unwrap() * ne.iter().skip(1).product::<u64>();
            let data: Vec<u8> = (0..n).map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8 ^ seed)).collect();
            w.write_tensor(&data).unwrap();
            datas.push(data);
        }
        w.finish().unwrap();

        let f = GgufFile::open(&path).unwrap();
        prop_assert_eq!(&f.metadata, &md);
        prop_assert_eq!(f.tensors.len(), infos.len());
        for ((t, (name, ty, ne)), data) in f.tensors.iter().zip(&infos).zip(&datas) {
            prop_assert_eq!(&t.name, name);
            prop_assert_eq!(t.ty, *ty);
            prop_assert_eq!(&t.ne, ne);
            prop_assert_eq!(f.tensor_data(t), data.as_slice());
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Truncating or corrupting a real file gives an error or a file whose tensors all lie
    /// inside it — never a panic or an out-of-bounds read.
    #[test]
    fn corrupted_files_never_panic(cut in 0usize..9000, flips in prop::collection::vec((0usize..2000, any::<u8>()), 0..4)) {
        let mut bytes = std::fs::read(support::golden("bad/nan.f32.gguf")).unwrap();
        for (pos, v) in flips {
            if pos < bytes.len() {
                bytes[pos] ^= v;
            }
        }
        bytes.truncate(cut.min(bytes.len()));
        let dir = support::temp_dir(&format!("corrupt-{cut}"));
        let path = dir.join("c.gguf");
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(f) = GgufFile::open(&path) {
            for t in &f.tensors {
                prop_assert!(f.tensor_data(t).len() as u64 == t.n_bytes().unwrap());
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
