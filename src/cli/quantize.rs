//! `qforge quantize`: llama-quantize's command line, so users can swap binaries. The options
//! that shape a quantization ([`QuantOptions`]) are shared with `qforge convert`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use qforge::convert::checkpoint::{HfModel, HfOptions};
use qforge::convert::encode::OutType;
use qforge::formats::imatrix;
use qforge::formats::same_file::{check_file_output, JobInput};
use qforge::formats::{GgufSource, TensorSource};
use qforge::ggml::ftype::QuantTarget;
use qforge::gpu::DeviceSpec;
use qforge::pipeline::quantize::{
    keep_split_path, parse_override, quantize, ImatrixInput, QuantizeJob, QuantizeReport,
};
use qforge::pipeline::target_size::{
    parse_size, plan_report_path, quantize_to_size, SizeGoal, SizePlanReport, SizeTarget,
    DEFAULT_SAMPLE_ELEMENTS,
};
use qforge::pipeline::Backend;
use qforge::quant::rules::{
    parse_ggml_type, parse_prune_layers, parse_tensor_type, parse_tensor_type_file, TypeOptions,
};
use qforge::quant::FileType;

/// llama-quantize's options (all but the positional words).
#[derive(Args, Clone)]
pub struct QuantOptions {
    /// Allow quantizing tensors that are already quantized.
    #[arg(long)]
    allow_requantize: bool,
    /// Leave output.weight unquantized.
    #[arg(long)]
    leave_output_tensor: bool,
    /// Disable the k-quant mixtures: every tensor gets the same type.
    #[arg(long)]
    pure: bool,
    /// Importance matrix file (GGUF or legacy .dat).
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Use the imatrix only for these tensors (repeatable).
    #[arg(long = "include-weights")]
    include_weights: Vec<String>,
    /// Use the imatrix for all tensors but these (repeatable).
    #[arg(long = "exclude-weights")]
    exclude_weights: Vec<String>,
    /// Type of output.weight.
    #[arg(long)]
    output_tensor_type: Option<String>,
    /// Type of token_embd.weight.
    #[arg(long)]
    token_embedding_type: Option<String>,
    /// NAME_REGEX=TYPE: type of the tensors whose name matches (repeatable; first match wins).
    #[arg(long = "tensor-type")]
    tensor_type: Vec<String>,
    /// File of NAME_REGEX=TYPE lines.
    #[arg(long = "tensor-type-file")]
    tensor_type_file: Option<PathBuf>,
    /// Remove these layers (comma-separated indices).
    #[arg(long = "prune-layers")]
    prune_layers: Option<String>,
    /// KEY=TYPE:VALUE metadata override (int:, float:, bool:, str:), repeatable.
    #[arg(long = "override-kv")]
    override_kv: Vec<String>,
    /// Plan and report sizes without writing anything.
    #[arg(long)]
    dry_run: bool,
    /// Where to run: auto, cpu, gpu, gpu:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Re-check this share (0–1) of every tensor's GPU rows on the CPU; a mismatch is an error.
    #[arg(long, default_value_t = 0.0)]
    verify: f64,
    /// Choose every tensor's type so the file holds at most this many bytes (plain bytes, or
    /// K/M/G/T = 1024ⁿ, KB/MB/GB/TB = 1000ⁿ, e.g. 4.2G); TYPE is the baseline mix the search
    /// starts from and names the file type. Writes OUTPUT.plan.json beside the output.
    #[arg(long, conflicts_with = "target_bpw")]
    target_size: Option<String>,
    /// As --target-size, in bits per weight of the tensor data (the header comes on top).
    #[arg(long)]
    target_bpw: Option<f64>,
    /// With --target-size/--target-bpw: elements per tensor measured for each candidate type
    /// (rows sampled evenly; the file itself is always quantized whole).
    #[arg(long, default_value_t = DEFAULT_SAMPLE_ELEMENTS)]
    target_sample: usize,
    /// With --target-size/--target-bpw: search only these types (comma-separated, e.g.
    /// q4_k,q5_k,q6_k,q8_0); protections still apply.
    #[arg(long, value_delimiter = ',')]
    target_types: Vec<String>,
    /// Refine a size-targeted allocation by KL divergence on TEXT (not supported yet).
    #[arg(long, value_name = "TEXT")]
    calibrate: Option<PathBuf>,
}

#[derive(Args)]
pub struct QuantizeArgs {
    #[command(flatten)]
    opts: QuantOptions,
    /// Write the output with llama.cpp's split naming (OUT-00001-of-00001.gguf).
    #[arg(long)]
    keep_split: bool,
    /// INPUT [OUTPUT] TYPE [NTHREADS]; INPUT is a .gguf file or a Hugging Face model directory,
    /// or one on the Hub: ORG/NAME[@REV], hf://ORG/NAME[@REV]/FILE.gguf (OUTPUT then defaults
    /// to the current folder).
    #[arg(required = true, num_args = 2..=4)]
    positional: Vec<String>,
}

impl QuantOptions {
    /// The files these options read (imatrix, tensor-type file), for the output checks.
    pub fn inputs(&self) -> Vec<JobInput<'_>> {
        let mut v = Vec::new();
        if let Some(p) = &self.imatrix {
            v.push(JobInput::new(p, "imatrix"));
        }
        if let Some(p) = &self.tensor_type_file {
            v.push(JobInput::new(p, "tensor-type file"));
        }
        v
    }

    /// The job for `target` written to `output`.
    pub fn job(&self, target: QuantTarget, output: PathBuf) -> Result<QuantizeJob> {
        if !self.include_weights.is_empty() && !self.exclude_weights.is_empty() {
            bail!("--include-weights and --exclude-weights cannot be used together");
        }
        if (!self.include_weights.is_empty() || !self.exclude_weights.is_empty())
            && self.imatrix.is_none()
        {
            bail!("--include-weights/--exclude-weights need --imatrix");
        }
        let ftype = match target {
            QuantTarget::Mix(f) => f,
            QuantTarget::Copy => FileType::F32,
        };
        let mut tensor_types = Vec::new();
        for s in &self.tensor_type {
            tensor_types.push(parse_tensor_type(s)?);
        }
        if let Some(f) = &self.tensor_type_file {
            tensor_types.extend(parse_tensor_type_file(f)?);
        }
        let parse_type = |s: &Option<String>, what: &str| -> Result<_> {
            s.as_deref()
                .map(|s| parse_ggml_type(s).with_context(|| what.to_string()))
                .transpose()
        };
        let type_options = TypeOptions {
            copy_only: target == QuantTarget::Copy,
            pure: self.pure,
            leave_output_tensor: self.leave_output_tensor,
            output_tensor_type: parse_type(&self.output_tensor_type, "--output-tensor-type")?,
            token_embedding_type: parse_type(&self.token_embedding_type, "--token-embedding-type")?,
            tensor_types,
            dry_run: self.dry_run,
            prune_layers: self
                .prune_layers
                .as_deref()
                .map(parse_prune_layers)
                .transpose()?
                .unwrap_or_default(),
            ..TypeOptions::new(ftype)
        };
        // As llama-quantize: an imatrix left empty by the include/exclude filters is no imatrix.
        let imatrix = match &self.imatrix {
            Some(path) => imatrix::prepare(path, &self.include_weights, &self.exclude_weights)?
                .map(|w| ImatrixInput {
                    kv: w.quantize_kv(&path.to_string_lossy()),
                    weights: w.entries,
                }),
            None => None,
        };
        let mut overrides = Vec::new();
        for s in &self.override_kv {
            overrides.push(parse_override(s)?);
        }
        Ok(QuantizeJob {
            output,
            target,
            type_options,
            allow_requantize: self.allow_requantize,
            imatrix,
            overrides,
        })
    }

    /// `--target-size` / `--target-bpw`, parsed (`None` for an ordinary mix).
    pub fn size_target(&self) -> Result<Option<SizeTarget>> {
        if self.calibrate.is_some() {
            bail!("--calibrate is not supported yet");
        }
        let goal = match (&self.target_size, self.target_bpw) {
            (Some(s), _) => SizeGoal::Bytes(parse_size(s)?),
            (None, Some(b)) => SizeGoal::Bpw(b),
            (None, None) => return Ok(None),
        };
        let candidates = if self.target_types.is_empty() {
            None
        } else {
            let mut v = Vec::new();
            for t in &self.target_types {
                v.push(parse_ggml_type(t).context("--target-types")?);
            }
            Some(v)
        };
        Ok(Some(SizeTarget {
            goal,
            sample_elements: self.target_sample,
            candidates,
        }))
    }

    /// `--dry-run`: nothing is written.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// `--device`, parsed.
    pub fn device_spec(&self) -> Result<DeviceSpec> {
        Ok(self.device.parse()?)
    }

    pub fn backend(&self, threads: usize) -> Result<Backend> {
        if !(0.0..=1.0).contains(&self.verify) {
            bail!("--verify takes a fraction between 0 and 1");
        }
        let spec = self.device_spec()?;
        let threads = super::limits::cap_threads(threads, "NTHREADS");
        Ok(Backend::select(spec, threads, self.verify)?)
    }

    /// Run the job on `source`, printing the per-tensor table.
    pub fn run(
        &self,
        source: &dyn TensorSource,
        target: QuantTarget,
        output: PathBuf,
        threads: usize,
    ) -> Result<()> {
        let backend = self.backend(threads)?;
        self.run_on(source, target, output, &backend)
    }

    /// [`Self::run`] on a backend the caller already selected (and may share).
    pub fn run_on(
        &self,
        source: &dyn TensorSource,
        target: QuantTarget,
        output: PathBuf,
        backend: &Backend,
    ) -> Result<()> {
        let size_target = self.size_target()?;
        let job = self.job(target, output.clone())?;
        eprintln!(
            "qforge: quantizing {} → {} on {}",
            source.describe(),
            output.display(),
            backend.describe()
        );
        match size_target {
            None => {
                let report = quantize(source, &job, backend)?;
                print_report(&report, self.dry_run, &output, true);
            }
            Some(t) => {
                eprintln!(
                    "qforge: measuring every candidate type of every tensor for a {} target",
                    t.goal.describe()
                );
                let (report, plan) = quantize_to_size(source, &job, &t, backend)?;
                print_size_plan(&plan);
                print_report(&report, self.dry_run, &output, false);
                if !self.dry_run {
                    println!("plan report: {}", plan_report_path(&output).display());
                }
            }
        }
        Ok(())
    }
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    // INPUT TYPE [N] or INPUT OUTPUT TYPE [N], decided as llama-quantize does: is the second
    // word a type?
    let p = &a.positional;
    let model = super::pull::local_model(Path::new(&p[0]))?;
    let input = model.path.clone();
    let (output, target, rest) = match QuantTarget::parse(&p[1]) {
        Some(t) => {
            let name = match t {
                QuantTarget::Copy => "COPY".into(),
                QuantTarget::Mix(_) => p[1].to_ascii_uppercase(),
            };
            let dir = if model.from_hub {
                Path::new("")
            } else if input.is_dir() {
                input.as_path()
            } else {
                input.parent().unwrap_or(Path::new(""))
            };
            (dir.join(format!("ggml-model-{name}.gguf")), t, &p[2..])
        }
        None => {
            let t = p
                .get(2)
                .and_then(|s| QuantTarget::parse(s))
                .ok_or_else(|| {
                    anyhow!(
                        "invalid or missing TYPE '{}'",
                        p.get(2).map_or("", |s| s.as_str())
                    )
                })?;
            (PathBuf::from(&p[1]), t, &p[3..])
        }
    };
    if rest.len() > 1 {
        bail!("unexpected argument '{}'", rest[1]);
    }
    let threads: usize = match rest.first() {
        Some(s) => s
            .parse()
            .with_context(|| format!("invalid nthread '{s}'"))?,
        None => 0,
    };
    let output = if a.keep_split {
        keep_split_path(&output)
    } else {
        output
    };
    if !a.opts.dry_run {
        let mut inputs = vec![JobInput::new(&input, "input")];
        inputs.extend(a.opts.inputs());
        check_file_output(&output, &inputs)?;
    }
    if input.is_dir() {
        // A Hugging Face checkpoint: converted to f32 on the fly, exactly as
        // `convert_hf_to_gguf.py --outtype f32` followed by llama-quantize.
        let source = HfModel::open(
            &input,
            &HfOptions {
                outtype: OutType::F32,
                model_name: None,
            },
        )?;
        return a.opts.run(&source, target, output, threads);
    }
    let source = GgufSource::open(&input)?;
    a.opts.run(&source, target, output, threads)
}

/// The size-targeted plan as a table: type per tensor, bytes, estimated error; then the sizes.
pub fn print_size_plan(p: &SizePlanReport) {
    println!(
        "{:<40} {:>8} {:>8} {:>12} {:>12} {:>12}",
        "tensor", "baseline", "type", "bytes", "est. error", "baseline err"
    );
    let e = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.5e}"));
    for t in &p.tensors {
        println!(
            "{:<40} {:>8} {:>8} {:>12} {:>12} {:>12}{}",
            t.name,
            t.baseline_type,
            t.ty,
            t.bytes,
            e(t.error),
            e(t.baseline_error),
            t.fixed
                .as_deref()
                .map_or_else(String::new, |f| format!("  ({f})"))
        );
    }
    println!(
        "target: {} = {} bytes; predicted {} bytes ({:.4} BPW), achieved {}; baseline {} is {} bytes",
        p.goal,
        p.target_bytes,
        p.predicted_bytes,
        p.bpw,
        p.achieved_bytes
            .map_or_else(|| "- (dry run)".to_string(), |b| format!("{b} bytes")),
        p.baseline,
        p.baseline_bytes
    );
    println!(
        "estimated error: {:.6e} (baseline {}){}; measured in {:.1} s; {}",
        p.estimated_error,
        e(p.baseline_error),
        if p.imatrix { ", imatrix-weighted" } else { "" },
        p.measure_seconds,
        p.method
    );
}

fn print_report(r: &QuantizeReport, dry_run: bool, output: &Path, per_tensor: bool) {
    for t in r.tensors.iter().filter(|_| per_tensor) {
        let shape: Vec<String> = t.ne.iter().map(|d| d.to_string()).collect();
        println!(
            "{:<40} [{:>16}] {:>7} → {:<7} {:>10.3} MiB → {:>10.3} MiB{}",
            t.name,
            shape.join(", "),
            t.from.name(),
            t.to.name(),
            t.bytes_in as f64 / 1048576.0,
            t.bytes_out as f64 / 1048576.0,
            if t.used_imatrix { "  (imatrix)" } else { "" }
        );
    }
    let bpw = |b: u64| b as f64 * 8.0 / r.n_elements.max(1) as f64;
    println!(
        "model size: {:.2} MiB ({:.2} BPW)",
        r.bytes_in as f64 / 1048576.0,
        bpw(r.bytes_in)
    );
    println!(
        "quant size: {:.2} MiB ({:.2} BPW)",
        r.bytes_out as f64 / 1048576.0,
        bpw(r.bytes_out)
    );
    let without: Vec<&str> = r
        .tensors
        .iter()
        // Block matmul weights: llama-imatrix never collects token_embd, nor output by default.
        .filter(|t| !t.used_imatrix && t.from != t.to && t.name.starts_with("blk."))
        .map(|t| t.name.as_str())
        .collect();
    if r.tensors.iter().any(|t| t.used_imatrix) && !without.is_empty() {
        println!(
            "warning: the imatrix has no entry for {} quantized tensor(s) (e.g. {}); they were quantized without one",
            without.len(),
            without[0]
        );
    }
    if r.n_fallback > 0 {
        println!(
            "warning: {} of {} tensor(s) required fallback quantization",
            r.n_fallback,
            r.tensors.len()
        );
    }
    if dry_run {
        println!("dry run: nothing written");
    } else {
        println!("wrote {} in {:.2} s", output.display(), r.seconds);
    }
}
