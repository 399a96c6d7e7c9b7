//! The device seam: the pipeline hands rows to a `Backend` and never knows which it holds.

use rayon::prelude::*;

use crate::quant::{self, GgmlType};

/// Where rows are quantized.
pub enum Backend {
    /// The CPU kernels on a fixed-size thread pool (the thread count never changes bytes: rows
    /// are independent).
    Cpu {
        pool: rayon::ThreadPool,
        threads: usize,
    },
}

impl Backend {
    /// A CPU backend with `threads` workers (0 = all cores).
    pub fn cpu(threads: usize) -> Backend {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        Backend::Cpu { pool, threads }
    }

    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu { threads, .. } => format!("cpu ({threads} threads)"),
        }
    }

    /// Quantize rows of `x` into `out`. `qw_all` holds the imatrix of every expert
    /// back to back; `expert_of(row)` says which slice a row uses.
    pub fn quantize_rows(
        &self,
        ty: GgmlType,
        x: &[f32],
        n_per_row: usize,
        qw_all: Option<&[f32]>,
        expert_of: impl Fn(usize) -> usize + Sync,
        out: &mut [u8],
    ) -> Result<(), quant::QuantError> {
        let q = quant::quantizer(ty).ok_or(quant::QuantError::NotSupported(ty))?;
        let row_out = quant::row_bytes(ty, n_per_row)?;
        match self {
            Backend::Cpu { pool, .. } => pool.install(|| {
                // Small rows are batched so a task is worth scheduling.
                let min_rows = (16384 / n_per_row.max(1)).max(1);
                x.par_chunks(n_per_row)
                    .zip(out.par_chunks_mut(row_out))
                    .enumerate()
                    .with_min_len(min_rows)
                    .for_each(|(r, (xr, or))| {
                        let qw = qw_all.map(|w| {
                            let e = expert_of(r);
                            &w[e * n_per_row..(e + 1) * n_per_row]
                        });
                        q(xr, qw, or)
                    });
            }),
        }
        Ok(())
    }
}
