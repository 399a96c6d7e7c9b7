//! The ggml vocabulary every layer shares: tensor types with their block geometry, and
//! llama_ftype, the whole-file mix a user asks for; token types. Plain data, no I/O, no kernels.

pub mod ftype;
pub mod token_type;
pub mod types;

pub use ftype::FileType;
pub use token_type::TokenType;
pub use types::GgmlType;
