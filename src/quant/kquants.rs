//! (being written) — until then every type here reports "not supported yet".

use super::{GgmlType, RowDequantizer, RowQuantizer};

pub fn quantizer(_ty: GgmlType) -> Option<RowQuantizer> {
    None
}

pub fn dequantizer(_ty: GgmlType) -> Option<RowDequantizer> {
    None
}
