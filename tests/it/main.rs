//! Every test that needs no GPU adapter, in one binary (one link of the library and wgpu instead
//! of one per file), as modules by subject. GPU tests are in tests/gpu; what both share is in
//! tests/support.
//!
//! Run one subject with `cargo test --test it -- convert::`; a new subject is a new module here.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod convert;
mod eval;
mod export;
mod faults;
mod formats;
mod hub;
mod inspect;
mod jobs;
mod library_errors;
mod lora;
mod quant;
