//! llama_ftype: the whole-file quantization mix a user asks for (include/llama.h,
//! tools/quantize/quantize.cpp's name table, llama_ftype_get_default_type).

use super::GgmlType;

/// A llama file type (`general.file_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum FileType {
    /// `LLAMA_FTYPE_ALL_F32` (id 0): tensors default to F32.
    F32,
    /// `LLAMA_FTYPE_MOSTLY_F16` (id 1): tensors default to F16.
    F16,
    /// `LLAMA_FTYPE_MOSTLY_Q4_0` (id 2): tensors default to Q4_0.
    Q4_0,
    /// `LLAMA_FTYPE_MOSTLY_Q4_1` (id 3): tensors default to Q4_1.
    Q4_1,
    /// `LLAMA_FTYPE_MOSTLY_Q8_0` (id 7): tensors default to Q8_0.
    Q8_0,
    /// `LLAMA_FTYPE_MOSTLY_Q5_0` (id 8): tensors default to Q5_0.
    Q5_0,
    /// `LLAMA_FTYPE_MOSTLY_Q5_1` (id 9): tensors default to Q5_1.
    Q5_1,
    /// `LLAMA_FTYPE_MOSTLY_Q2_K` (id 10): tensors default to Q2_K.
    Q2_K,
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_S` (id 11): tensors default to Q3_K.
    Q3_K_S,
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_M` (id 12): tensors default to Q3_K.
    Q3_K_M,
    /// `LLAMA_FTYPE_MOSTLY_Q3_K_L` (id 13): tensors default to Q3_K.
    Q3_K_L,
    /// `LLAMA_FTYPE_MOSTLY_Q4_K_S` (id 14): tensors default to Q4_K.
    Q4_K_S,
    /// `LLAMA_FTYPE_MOSTLY_Q4_K_M` (id 15): tensors default to Q4_K.
    Q4_K_M,
    /// `LLAMA_FTYPE_MOSTLY_Q5_K_S` (id 16): tensors default to Q5_K.
    Q5_K_S,
    /// `LLAMA_FTYPE_MOSTLY_Q5_K_M` (id 17): tensors default to Q5_K.
    Q5_K_M,
    /// `LLAMA_FTYPE_MOSTLY_Q6_K` (id 18): tensors default to Q6_K.
    Q6_K,
    /// `LLAMA_FTYPE_MOSTLY_IQ2_XXS` (id 19): tensors default to IQ2_XXS.
    IQ2_XXS,
    /// `LLAMA_FTYPE_MOSTLY_IQ2_XS` (id 20): tensors default to IQ2_XS.
    IQ2_XS,
    /// `LLAMA_FTYPE_MOSTLY_Q2_K_S` (id 21): tensors default to Q2_K.
    Q2_K_S,
    /// `LLAMA_FTYPE_MOSTLY_IQ3_XS` (id 22): tensors default to IQ3_S.
    IQ3_XS,
    /// `LLAMA_FTYPE_MOSTLY_IQ3_XXS` (id 23): tensors default to IQ3_XXS.
    IQ3_XXS,
    /// `LLAMA_FTYPE_MOSTLY_IQ1_S` (id 24): tensors default to IQ1_S.
    IQ1_S,
    /// `LLAMA_FTYPE_MOSTLY_IQ4_NL` (id 25): tensors default to IQ4_NL.
    IQ4_NL,
    /// `LLAMA_FTYPE_MOSTLY_IQ3_S` (id 26): tensors default to IQ3_S.
    IQ3_S,
    /// `LLAMA_FTYPE_MOSTLY_IQ3_M` (id 27): tensors default to IQ3_S.
    IQ3_M,
    /// `LLAMA_FTYPE_MOSTLY_IQ2_S` (id 28): tensors default to IQ2_XS.
    IQ2_S,
    /// `LLAMA_FTYPE_MOSTLY_IQ2_M` (id 29): tensors default to IQ2_S.
    IQ2_M,
    /// `LLAMA_FTYPE_MOSTLY_IQ4_XS` (id 30): tensors default to IQ4_XS.
    IQ4_XS,
    /// `LLAMA_FTYPE_MOSTLY_IQ1_M` (id 31): tensors default to IQ1_M.
    IQ1_M,
    /// `LLAMA_FTYPE_MOSTLY_BF16` (id 32): tensors default to BF16.
    BF16,
    /// `LLAMA_FTYPE_MOSTLY_TQ1_0` (id 36): tensors default to TQ1_0.
    TQ1_0,
    /// `LLAMA_FTYPE_MOSTLY_TQ2_0` (id 37): tensors default to TQ2_0.
    TQ2_0,
    /// `LLAMA_FTYPE_MOSTLY_MXFP4_MOE` (id 38): tensors default to MXFP4.
    MXFP4_MOE,
    /// `LLAMA_FTYPE_MOSTLY_NVFP4` (id 39): tensors default to NVFP4.
    NVFP4,
    /// `LLAMA_FTYPE_MOSTLY_Q1_0` (id 40): tensors default to Q1_0.
    Q1_0,
    /// `LLAMA_FTYPE_MOSTLY_Q2_0` (id 41): tensors default to Q2_0.
    Q2_0,
}

/// (ftype, llama_ftype id, default tensor type)
const FTYPES: &[(FileType, u32, GgmlType)] = {
    use FileType as F;
    use GgmlType as G;
    &[
        (F::F32, 0, G::F32),
        (F::F16, 1, G::F16),
        (F::Q4_0, 2, G::Q4_0),
        (F::Q4_1, 3, G::Q4_1),
        (F::Q8_0, 7, G::Q8_0),
        (F::Q5_0, 8, G::Q5_0),
        (F::Q5_1, 9, G::Q5_1),
        (F::Q2_K, 10, G::Q2_K),
        (F::Q3_K_S, 11, G::Q3_K),
        (F::Q3_K_M, 12, G::Q3_K),
        (F::Q3_K_L, 13, G::Q3_K),
        (F::Q4_K_S, 14, G::Q4_K),
        (F::Q4_K_M, 15, G::Q4_K),
        (F::Q5_K_S, 16, G::Q5_K),
        (F::Q5_K_M, 17, G::Q5_K),
        (F::Q6_K, 18, G::Q6_K),
        (F::IQ2_XXS, 19, G::IQ2_XXS),
        (F::IQ2_XS, 20, G::IQ2_XS),
        (F::Q2_K_S, 21, G::Q2_K),
        (F::IQ3_XS, 22, G::IQ3_S),
        (F::IQ3_XXS, 23, G::IQ3_XXS),
        (F::IQ1_S, 24, G::IQ1_S),
        (F::IQ4_NL, 25, G::IQ4_NL),
        (F::IQ3_S, 26, G::IQ3_S),
        (F::IQ3_M, 27, G::IQ3_S),
        (F::IQ2_S, 28, G::IQ2_XS),
        (F::IQ2_M, 29, G::IQ2_S),
        (F::IQ4_XS, 30, G::IQ4_XS),
        (F::IQ1_M, 31, G::IQ1_M),
        (F::BF16, 32, G::BF16),
        (F::TQ1_0, 36, G::TQ1_0),
        (F::TQ2_0, 37, G::TQ2_0),
        (F::MXFP4_MOE, 38, G::MXFP4),
        (F::NVFP4, 39, G::NVFP4),
        (F::Q1_0, 40, G::Q1_0),
        (F::Q2_0, 41, G::Q2_0),
    ]
};

/// What a TYPE argument of `quantize` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantTarget {
    /// A file type mix.
    Mix(FileType),
    /// COPY: copy tensors, quantize nothing (llama-quantize writes ftype ALL_F32).
    Copy,
}

impl FileType {
    fn entry(self) -> &'static (FileType, u32, GgmlType) {
        FTYPES
            .iter()
            .find(|e| e.0 == self)
            .expect("every variant is in FTYPES")
    }

    /// The value stored in `general.file_type`.
    pub fn id(self) -> u32 {
        self.entry().1
    }

    /// The tensor type a mix starts from (llama_ftype_get_default_type).
    pub fn default_type(self) -> GgmlType {
        self.entry().2
    }

    /// The file type stored as `id` in `general.file_type`, if known.
    pub fn from_id(id: u32) -> Option<FileType> {
        FTYPES.iter().find(|e| e.1 == id).map(|e| e.0)
    }

    /// The canonical name, as quantize.cpp lists it.
    pub fn name(self) -> String {
        format!("{self:?}")
    }

    /// Every file type, in id order.
    pub fn all() -> impl Iterator<Item = FileType> {
        FTYPES.iter().map(|e| e.0)
    }

    /// The mix llama.cpp's model loader guesses from a file's most common tensor type when
    /// `general.file_type` is absent (K types map to their _M mix).
    pub fn guess_from_type(ty: GgmlType) -> Option<FileType> {
        use FileType as F;
        use GgmlType as G;
        Some(match ty {
            G::F32 => F::F32,
            G::F16 => F::F16,
            G::BF16 => F::BF16,
            G::Q4_0 => F::Q4_0,
            G::Q4_1 => F::Q4_1,
            G::Q5_0 => F::Q5_0,
            G::Q5_1 => F::Q5_1,
            G::Q8_0 => F::Q8_0,
            G::Q2_K => F::Q2_K,
            G::Q3_K => F::Q3_K_M,
            G::Q4_K => F::Q4_K_M,
            G::Q5_K => F::Q5_K_M,
            G::Q6_K => F::Q6_K,
            G::TQ1_0 => F::TQ1_0,
            G::TQ2_0 => F::TQ2_0,
            G::IQ2_XXS => F::IQ2_XXS,
            G::IQ2_XS => F::IQ2_XS,
            G::IQ2_S => F::IQ2_S,
            G::IQ3_XXS => F::IQ3_XXS,
            G::IQ1_S => F::IQ1_S,
            G::IQ1_M => F::IQ1_M,
            G::IQ4_NL => F::IQ4_NL,
            G::IQ4_XS => F::IQ4_XS,
            G::IQ3_S => F::IQ3_S,
            G::NVFP4 => F::NVFP4,
            G::Q1_0 => F::Q1_0,
            G::Q2_0 => F::Q2_0,
            _ => return None,
        })
    }
}

impl QuantTarget {
    /// Parse a TYPE argument the way llama-quantize does: a name from its table
    /// (case-insensitive, with the aliases Q3_K, Q4_K, Q5_K) or a numeric ftype id.
    pub fn parse(s: &str) -> Option<QuantTarget> {
        let up = s.to_ascii_uppercase();
        match up.as_str() {
            "COPY" => return Some(QuantTarget::Copy),
            "Q3_K" => return Some(QuantTarget::Mix(FileType::Q3_K_M)),
            "Q4_K" => return Some(QuantTarget::Mix(FileType::Q4_K_M)),
            "Q5_K" => return Some(QuantTarget::Mix(FileType::Q5_K_M)),
            _ => {}
        }
        if let Some(f) = FileType::all().find(|f| f.name() == up) {
            return Some(QuantTarget::Mix(f));
        }
        s.parse::<u32>()
            .ok()
            .and_then(FileType::from_id)
            .map(QuantTarget::Mix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_aliases_and_ids() {
        assert_eq!(
            QuantTarget::parse("q4_k_m"),
            Some(QuantTarget::Mix(FileType::Q4_K_M))
        );
        assert_eq!(
            QuantTarget::parse("Q4_K"),
            Some(QuantTarget::Mix(FileType::Q4_K_M))
        );
        assert_eq!(
            QuantTarget::parse("15"),
            Some(QuantTarget::Mix(FileType::Q4_K_M))
        );
        assert_eq!(QuantTarget::parse("copy"), Some(QuantTarget::Copy));
        assert_eq!(QuantTarget::parse("Q9_Z"), None);
        assert_eq!(FileType::Q4_K_S.default_type(), GgmlType::Q4_K);
        assert_eq!(FileType::BF16.id(), 32);
    }
}
