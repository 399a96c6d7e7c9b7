//! `qforge doctor`: which GPUs exist, and whether each kernel passed its self-check on them.

use anyhow::{bail, Result};
use clap::Args;

use qforge::gpu::DeviceSpec;
use qforge::pipeline::doctor::doctor;

#[derive(Args)]
pub struct DoctorArgs {
    /// Which adapters to check: gpu (all usable), gpu:N.
    #[arg(long, default_value = "gpu")]
    device: String,
}

pub fn run(a: DoctorArgs) -> Result<()> {
    let spec: DeviceSpec = a.device.parse()?;
    let report = doctor(spec);
    print!("{report}");
    let all_ok = report
        .adapters
        .iter()
        .any(|a| a.open_error.is_none() && a.kernels.iter().all(|(_, h)| h.as_result().is_ok()));
    if !all_ok {
        bail!("no GPU adapter passed every self-check (the CPU path is unaffected)");
    }
    Ok(())
}
