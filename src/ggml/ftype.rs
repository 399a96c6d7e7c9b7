//! llama_ftype: the whole-file quantization mix a user asks for (include/llama.h,
//! tools/quantize/quantize.cpp's name table, llama_ftype_get_default_type).

use super::GgmlType;

/// A llama file type (`general.file_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ2_XXS,
    IQ2_XS,
    Q2_K_S,
    IQ3_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ3_M,
    IQ2_S,
    IQ2_M,
    IQ4_XS,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4_MOE,
    NVFP4,
    Q1_0,
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

    pub fn from_id(id: u32) -> Option<FileType> {
        FTYPES.iter().find(|e| e.1 == id).map(|e| e.0)
    }

    /// The canonical name, as quantize.cpp lists it.
    pub fn name(self) -> String {
        format!("{self:?}")
    }

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
