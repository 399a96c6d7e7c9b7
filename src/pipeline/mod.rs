//! The streaming read → plan → quantize → write path.

pub mod backend;
pub mod bench;
pub mod convert;
pub mod convert_lora;
pub mod device_choice;
pub mod doctor;
pub mod error;
pub mod override_check;
pub mod quantize;
pub mod target_size;

pub use backend::Backend;
pub use device_choice::DeviceChoice;
pub use error::PipelineError;
