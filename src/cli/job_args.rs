//! Checking a qforge command line without running it, so `batch` and `serve` queue only what the
//! CLI itself accepts, and finding the words of a command line that may name files.

use clap::error::ErrorKind;
use clap::CommandFactory;

use qforge::convert::encode::OutType;
use qforge::ggml::ftype::QuantTarget;

/// The commands `qforge serve` runs. Those not built yet (validate, compare, export, pull) are
/// listed so they work once they exist; until then the parser refuses them.
pub const SERVE_COMMANDS: &[&str] = &[
    "quantize",
    "convert",
    "merge-lora",
    "lora-to-gguf",
    "imatrix",
    "perplexity",
    "sweep",
    "validate",
    "compare",
    "export",
    "pull",
];

/// Check `args` (a command line without the program name) with the CLI's own parser, then the
/// values the parser takes as plain strings (quantize TYPE and NTHREADS, convert --outtype,
/// sweep --types). The error is the parser's message, one paragraph.
pub fn check(args: &[String]) -> Result<(), String> {
    let argv = std::iter::once("qforge".to_string()).chain(args.iter().cloned());
    let matches = match super::Cli::command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => return Err(clap_message(&e)),
    };
    let Some((name, m)) = matches.subcommand() else {
        return Err("no command given".into());
    };
    match name {
        "quantize" => {
            let p: Vec<&String> = m
                .get_many::<String>("positional")
                .map(|v| v.collect())
                .unwrap_or_default();
            check_quantize_positional(&p)
        }
        "convert" => {
            let t = m
                .get_one::<String>("outtype")
                .map_or("auto", |s| s.as_str());
            if OutType::parse(t).is_none() && QuantTarget::parse(t).is_none() {
                return Err(format!(
                    "--outtype {t}: not f32/f16/bf16/q8_0/auto nor a quantize type"
                ));
            }
            Ok(())
        }
        "sweep" => {
            for t in m.get_many::<String>("types").into_iter().flatten() {
                if QuantTarget::parse(t).is_none() {
                    return Err(format!("--types: invalid quantize type '{t}'"));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// quantize's INPUT [OUTPUT] TYPE [NTHREADS], read as `quantize::run` reads it.
fn check_quantize_positional(p: &[&String]) -> Result<(), String> {
    let rest = if p.len() > 1 && QuantTarget::parse(p[1]).is_some() {
        &p[2..]
    } else {
        match p.get(2) {
            Some(t) if QuantTarget::parse(t).is_some() => &p[3..],
            other => {
                return Err(format!(
                    "invalid or missing TYPE '{}'",
                    other.map_or("", |s| s.as_str())
                ))
            }
        }
    };
    if rest.len() > 1 {
        return Err(format!("unexpected argument '{}'", rest[1]));
    }
    if let Some(n) = rest.first() {
        n.parse::<usize>()
            .map_err(|_| format!("invalid nthread '{n}'"))?;
    }
    Ok(())
}

/// Whether quantize's positional words already carry NTHREADS.
pub fn quantize_has_threads(p: &[&String]) -> bool {
    if p.len() > 1 && QuantTarget::parse(p[1]).is_some() {
        p.len() > 2
    } else {
        p.len() > 3
    }
}

/// clap's error as one paragraph without the usage lines.
pub fn clap_message(e: &clap::Error) -> String {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            return "--help and --version are not jobs".into()
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return "incomplete command line".into()
        }
        _ => {}
    }
    let text = e.to_string();
    let first: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).collect();
    let joined = first.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .trim()
        .to_string()
}

/// Every word of `args` (after the command name) that may name a file: positional words,
/// option values (`--opt=V`, `-oV`), and their pieces split at `=`, `:` and `,` (an
/// `ADAPTER:SCALE`, a `KEY=str:VALUE`). Over-inclusive on purpose: a type name is checked as a
/// harmless relative path, while nothing that could name a file is missed.
pub fn path_words(args: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in args.iter().skip(1) {
        let word = if let Some(rest) = a.strip_prefix("--") {
            match rest.split_once('=') {
                Some((_, v)) => v.to_string(),
                None => continue,
            }
        } else if a.starts_with('-') {
            if a.len() <= 2 {
                continue;
            }
            a[2..].to_string()
        } else {
            a.clone()
        };
        let mut push = |s: &str| {
            if !s.is_empty() && !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        };
        push(&word);
        for piece in word.split(['=', ':', ',']) {
            push(piece);
        }
    }
    out
}
