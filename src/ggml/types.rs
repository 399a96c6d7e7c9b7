//! ggml tensor types: ids, names, block geometry (ggml/src/ggml.c `type_traits`).

use std::fmt;

/// A ggml tensor element type, with the id GGUF stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// `GGML_TYPE_F32`: 32-bit IEEE float.
    F32 = 0,
    /// `GGML_TYPE_F16`: 16-bit IEEE half float.
    F16 = 1,
    /// `GGML_TYPE_Q4_0`: blocks of 32 weights in 18 bytes (4.5 bits per weight).
    Q4_0 = 2,
    /// `GGML_TYPE_Q4_1`: blocks of 32 weights in 20 bytes (5 bits per weight).
    Q4_1 = 3,
    /// `GGML_TYPE_Q5_0`: blocks of 32 weights in 22 bytes (5.5 bits per weight).
    Q5_0 = 6,
    /// `GGML_TYPE_Q5_1`: blocks of 32 weights in 24 bytes (6 bits per weight).
    Q5_1 = 7,
    /// `GGML_TYPE_Q8_0`: blocks of 32 weights in 34 bytes (8.5 bits per weight).
    Q8_0 = 8,
    /// `GGML_TYPE_Q8_1`: blocks of 32 weights in 36 bytes (9 bits per weight).
    Q8_1 = 9,
    /// `GGML_TYPE_Q2_K`: blocks of 256 weights in 84 bytes (2.625 bits per weight).
    Q2_K = 10,
    /// `GGML_TYPE_Q3_K`: blocks of 256 weights in 110 bytes (3.438 bits per weight).
    Q3_K = 11,
    /// `GGML_TYPE_Q4_K`: blocks of 256 weights in 144 bytes (4.5 bits per weight).
    Q4_K = 12,
    /// `GGML_TYPE_Q5_K`: blocks of 256 weights in 176 bytes (5.5 bits per weight).
    Q5_K = 13,
    /// `GGML_TYPE_Q6_K`: blocks of 256 weights in 210 bytes (6.562 bits per weight).
    Q6_K = 14,
    /// `GGML_TYPE_Q8_K`: blocks of 256 weights in 292 bytes (9.125 bits per weight).
    Q8_K = 15,
    /// `GGML_TYPE_IQ2_XXS`: blocks of 256 weights in 66 bytes (2.062 bits per weight).
    IQ2_XXS = 16,
    /// `GGML_TYPE_IQ2_XS`: blocks of 256 weights in 74 bytes (2.312 bits per weight).
    IQ2_XS = 17,
    /// `GGML_TYPE_IQ3_XXS`: blocks of 256 weights in 98 bytes (3.062 bits per weight).
    IQ3_XXS = 18,
    /// `GGML_TYPE_IQ1_S`: blocks of 256 weights in 50 bytes (1.562 bits per weight).
    IQ1_S = 19,
    /// `GGML_TYPE_IQ4_NL`: blocks of 32 weights in 18 bytes (4.5 bits per weight).
    IQ4_NL = 20,
    /// `GGML_TYPE_IQ3_S`: blocks of 256 weights in 110 bytes (3.438 bits per weight).
    IQ3_S = 21,
    /// `GGML_TYPE_IQ2_S`: blocks of 256 weights in 82 bytes (2.562 bits per weight).
    IQ2_S = 22,
    /// `GGML_TYPE_IQ4_XS`: blocks of 256 weights in 136 bytes (4.25 bits per weight).
    IQ4_XS = 23,
    /// `GGML_TYPE_I8`: 8-bit signed integer.
    I8 = 24,
    /// `GGML_TYPE_I16`: 16-bit signed integer.
    I16 = 25,
    /// `GGML_TYPE_I32`: 32-bit signed integer.
    I32 = 26,
    /// `GGML_TYPE_I64`: 64-bit signed integer.
    I64 = 27,
    /// `GGML_TYPE_F64`: 64-bit float.
    F64 = 28,
    /// `GGML_TYPE_IQ1_M`: blocks of 256 weights in 56 bytes (1.75 bits per weight).
    IQ1_M = 29,
    /// `GGML_TYPE_BF16`: bfloat16: the top 16 bits of an f32.
    BF16 = 30,
    /// `GGML_TYPE_TQ1_0`: blocks of 256 weights in 54 bytes (1.688 bits per weight).
    TQ1_0 = 34,
    /// `GGML_TYPE_TQ2_0`: blocks of 256 weights in 66 bytes (2.062 bits per weight).
    TQ2_0 = 35,
    /// `GGML_TYPE_MXFP4`: blocks of 32 weights in 17 bytes (4.25 bits per weight).
    MXFP4 = 39,
    /// `GGML_TYPE_NVFP4`: blocks of 64 weights in 36 bytes (4.5 bits per weight).
    NVFP4 = 40,
    /// `GGML_TYPE_Q1_0`: blocks of 128 weights in 18 bytes (1.125 bits per weight).
    Q1_0 = 41,
    /// `GGML_TYPE_Q2_0`: blocks of 64 weights in 18 bytes (2.25 bits per weight).
    Q2_0 = 42,
}

/// (type, name, elements per block, bytes per block)
const TABLE: &[(GgmlType, &str, usize, usize)] = &[
    (GgmlType::F32, "F32", 1, 4),
    (GgmlType::F16, "F16", 1, 2),
    (GgmlType::Q4_0, "Q4_0", 32, 18),
    (GgmlType::Q4_1, "Q4_1", 32, 20),
    (GgmlType::Q5_0, "Q5_0", 32, 22),
    (GgmlType::Q5_1, "Q5_1", 32, 24),
    (GgmlType::Q8_0, "Q8_0", 32, 34),
    (GgmlType::Q8_1, "Q8_1", 32, 36),
    (GgmlType::Q2_K, "Q2_K", 256, 84),
    (GgmlType::Q3_K, "Q3_K", 256, 110),
    (GgmlType::Q4_K, "Q4_K", 256, 144),
    (GgmlType::Q5_K, "Q5_K", 256, 176),
    (GgmlType::Q6_K, "Q6_K", 256, 210),
    (GgmlType::Q8_K, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, "IQ4_XS", 256, 136),
    (GgmlType::I8, "I8", 1, 1),
    (GgmlType::I16, "I16", 1, 2),
    (GgmlType::I32, "I32", 1, 4),
    (GgmlType::I64, "I64", 1, 8),
    (GgmlType::F64, "F64", 1, 8),
    (GgmlType::IQ1_M, "IQ1_M", 256, 56),
    (GgmlType::BF16, "BF16", 1, 2),
    (GgmlType::TQ1_0, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, "MXFP4", 32, 17),
    (GgmlType::NVFP4, "NVFP4", 64, 36),
    (GgmlType::Q1_0, "Q1_0", 128, 18),
    (GgmlType::Q2_0, "Q2_0", 64, 18),
];

impl GgmlType {
    /// Every known type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|e| e.0)
    }

    /// The type GGUF stores as `id`, if known.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|e| e.0 as u32 == id).map(|e| e.0)
    }

    /// The type named `name` (ggml's upper-case name; case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|e| e.1.eq_ignore_ascii_case(name))
            .map(|e| e.0)
    }

    fn entry(self) -> &'static (GgmlType, &'static str, usize, usize) {
        TABLE
            .iter()
            .find(|e| e.0 == self)
            .expect("every variant is in TABLE")
    }

    /// The id GGUF stores for this type (`ggml_type`).
    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name for the type (`ggml_type_name`), e.g. `Q4_K`.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// Elements per block (1 for plain types).
    pub fn block_size(self) -> usize {
        self.entry().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.entry().3
    }

    /// Whether the type is block-quantized (not a plain float or integer type).
    pub fn is_quantized(self) -> bool {
        !matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::F64
                | GgmlType::I8
                | GgmlType::I16
                | GgmlType::I32
                | GgmlType::I64
        )
    }

    /// Bytes of one row of `n` elements, or `None` when `n` is not a whole number of blocks.
    pub fn row_size(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_round_trip() {
        for t in GgmlType::all() {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(&t.name().to_lowercase()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::Q4_K.row_size(512), Some(288));
        assert_eq!(GgmlType::Q4_K.row_size(100), None);
    }
}
