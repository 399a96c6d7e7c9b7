//! Is an encoded tensor finite? Every writer checks its output with [`first_non_finite`]
//! before writing it: a finite input can overflow on encoding (1e6 is +inf in f16, a block of
//! 1e10 gives an inf Q8_0 scale), and a file with inf or NaN in it loads and then produces
//! garbage. llama.cpp's Python converter writes such values silently; qforge refuses.

use crate::quant::{bf16_to_f32, f16_to_f32, GgmlType};

/// The first non-finite value in encoded data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NonFiniteValue {
    /// Index of the element (for a block type, the first element of the block whose scale is
    /// not finite).
    pub element: usize,
    /// The value as stored (for a block type, the block's scale).
    pub value: f32,
    /// Whether `value` is a block scale rather than an element.
    pub is_block_scale: bool,
}

impl std::fmt::Display for NonFiniteValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_block_scale {
            write!(
                f,
                "the block scale of elements {}.. is {}",
                self.element, self.value
            )
        } else {
            write!(f, "element {} is {}", self.element, self.value)
        }
    }
}

/// The first inf or NaN in `bytes`, encoded as `ty`: an element for F32/F16/BF16, a block
/// scale for Q8_0. `None` when all are finite, and for types this does not inspect (the
/// quantizers of the other types refuse non-finite input before encoding).
pub fn first_non_finite(ty: GgmlType, bytes: &[u8]) -> Option<NonFiniteValue> {
    let element = |element, value| NonFiniteValue {
        element,
        value,
        is_block_scale: false,
    };
    match ty {
        GgmlType::F32 => bytes.chunks_exact(4).enumerate().find_map(|(i, b)| {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (!v.is_finite()).then(|| element(i, v))
        }),
        GgmlType::F16 => bytes.chunks_exact(2).enumerate().find_map(|(i, b)| {
            let h = u16::from_le_bytes([b[0], b[1]]);
            (h & 0x7c00 == 0x7c00).then(|| element(i, f16_to_f32(h)))
        }),
        GgmlType::BF16 => bytes.chunks_exact(2).enumerate().find_map(|(i, b)| {
            let h = u16::from_le_bytes([b[0], b[1]]);
            (h & 0x7f80 == 0x7f80).then(|| element(i, bf16_to_f32(h)))
        }),
        GgmlType::Q8_0 => bytes.chunks_exact(34).enumerate().find_map(|(i, b)| {
            let d = u16::from_le_bytes([b[0], b[1]]);
            (d & 0x7c00 == 0x7c00).then(|| NonFiniteValue {
                element: i * 32,
                value: f16_to_f32(d),
                is_block_scale: true,
            })
        }),
        _ => None,
    }
}
