//! GGUF bytes: property-based write/read round trips, every golden rewritten byte for byte, and
//! damaged files refused.

mod bad_files;
mod gguf_properties;
mod golden_roundtrip;
