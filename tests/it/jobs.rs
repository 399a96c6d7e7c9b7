//! `qforge batch`, the defaults file (`qforge config`) and `qforge serve`, driven through the real
//! binary: recipes, resume, shards, the REST API on loopback, cancel, kill -9 and restart.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_qforge");

// ---------------------------------------------------------------------------------------------
// Helpers

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "qforge-jobs-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(std::fs::canonicalize(&p).unwrap())
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `qforge` in `cwd`, with a user config directory of its own (never the developer's).
fn qforge(cwd: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd)
        .env("XDG_CONFIG_HOME", cwd.join(".xdg-config"))
        .env_remove("QFORGE_NO_CONFIG");
    c
}

fn run_ok(c: &mut Command) -> Output {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A small random llama GGUF at `cwd/rel`.
fn synth(cwd: &Path, rel: &str, layers: u32, embd: u64, seed: u64) {
    if let Some(p) = cwd.join(rel).parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    run_ok(qforge(cwd).args([
        "synth",
        rel,
        "--layers",
        &layers.to_string(),
        "--embd",
        &embd.to_string(),
        "--ff",
        &(embd * 2).to_string(),
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--vocab",
        "512",
        "--seed",
        &seed.to_string(),
    ]));
}

/// What `qforge quantize IN OUT TYPE N` writes, run directly.
fn cli_quantize(cwd: &Path, input: &str, ty: &str, threads: &str) -> Vec<u8> {
    let out = format!("cli-ref.{ty}.{}.gguf", std::process::id());
    run_ok(qforge(cwd).args(["quantize", input, &out, ty, threads]));
    let bytes = std::fs::read(cwd.join(&out)).unwrap();
    std::fs::remove_file(cwd.join(&out)).unwrap();
    bytes
}

/// Every file under `dir` (relative names), sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().to_string());
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

fn temp_files(dir: &Path) -> Vec<String> {
    files_under(dir)
        .into_iter()
        .filter(|f| f.ends_with(".tmp"))
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state letter is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// The server

struct Server {
    child: Child,
    url: String,
    token: String,
}

impl Server {
    fn start(root: &Path, state: &Path, extra: &[&str]) -> Server {
        let token = "s3cret-token-for-tests";
        let token_file = state.join("token.txt");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let mut child = qforge(root)
            .args(["serve", "--listen", "127.0.0.1:0", "--root"])
            .arg(root)
            .arg("--token-file")
            .arg(&token_file)
            .arg("--state")
            .arg(state)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Server {
            child,
            url,
            token: token.into(),
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    }

    /// (status, body) of METHOD PATH with the token (or `auth`, when given: "" for none).
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        auth: Option<&str>,
    ) -> (u16, String) {
        let agent = Self::agent();
        let url = format!("{}{path}", self.url);
        let header = match auth {
            None => Some(format!("Bearer {}", self.token)),
            Some("") => None,
            Some(a) => Some(a.to_string()),
        };
        let mut resp = match (method, body) {
            ("POST", Some(b)) => {
                let mut rq = agent.post(&url).content_type("application/json");
                if let Some(h) = &header {
                    rq = rq.header("Authorization", h);
                }
                rq.send(b)
            }
            ("GET", _) => {
                let mut rq = agent.get(&url);
                if let Some(h) = &header {
                    rq = rq.header("Authorization", h);
                }
                rq.call()
            }
            ("DELETE", _) => {
                let mut rq = agent.delete(&url);
                if let Some(h) = &header {
                    rq = rq.header("Authorization", h);
                }
                rq.call()
            }
            ("PUT", _) => {
                let mut rq = agent.put(&url);
                if let Some(h) = &header {
                    rq = rq.header("Authorization", h);
                }
                rq.send("")
            }
            other => panic!("{other:?}"),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap();
        (status, text)
    }

    fn post_json(&self, v: &Value) -> (u16, Value) {
        let (s, b) = self.request("POST", "/v1/jobs", Some(v.to_string().into_bytes()), None);
        (
            s,
            serde_json::from_str(&b).unwrap_or_else(|_| panic!("not JSON: {b}")),
        )
    }

    fn submit(&self, args: &[&str]) -> (u16, Value) {
        self.post_json(&json!({ "args": args }))
    }

    fn job(&self, id: i64) -> Value {
        let (s, b) = self.request("GET", &format!("/v1/jobs/{id}"), None, None);
        assert_eq!(s, 200, "{b}");
        serde_json::from_str(&b).unwrap()
    }

    fn jobs(&self) -> Vec<Value> {
        let (s, b) = self.request("GET", "/v1/jobs", None, None);
        assert_eq!(s, 200, "{b}");
        let v: Value = serde_json::from_str(&b).unwrap();
        v["jobs"].as_array().unwrap().clone()
    }

    fn wait_finished(&self, id: i64, timeout: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let j = self.job(id);
            if !["queued", "running"].contains(&j["state"].as_str().unwrap()) {
                return j;
            }
            assert!(t0.elapsed() < timeout, "job {id} still {}", j["state"]);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A model whose quantization writes for a while (tens of MiB). Returns its path in `root`.
fn slow_model(root: &Path) -> &'static str {
    synth(root, "big.gguf", 4, 1024, 7);
    "big.gguf"
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

/// Wait until a temporary output under `dir` holds data, then stop (SIGSTOP) the process
/// writing it: a job caught mid-write however fast the machine is. Returns its pid and the
/// temporary file (relative to `dir`).
fn freeze_writer(dir: &Path) -> (u32, String) {
    let mut found = None;
    wait_for(
        "a temporary output with data",
        Duration::from_secs(120),
        || {
            found = temp_files(dir)
                .into_iter()
                .find(|f| std::fs::metadata(dir.join(f)).is_ok_and(|m| m.len() > 0));
            found.is_some()
        },
    );
    let tmp = found.unwrap();
    let pid: u32 = tmp
        .trim_end_matches(".tmp")
        .rsplit('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    signal(pid, "-STOP");
    (pid, tmp)
}

// ---------------------------------------------------------------------------------------------
// serve

#[test]
fn serve_requires_the_bearer_token() {
    let root = TempDir::new("auth-root");
    let state = TempDir::new("auth-state");
    let srv = Server::start(root.path(), state.path(), &[]);
    for auth in [
        "",
        "Bearer wrong-token",
        "Bearer s3cret-token-for-test",
        "Basic czNjcmV0",
        "s3cret-token-for-tests",
    ] {
        let (s, b) = srv.request("GET", "/v1/jobs", None, Some(auth));
        assert_eq!(s, 401, "auth {auth:?}: {b}");
        let (s, _) = srv.request(
            "POST",
            "/v1/jobs",
            Some(br#"{"args":["quantize","m.gguf","o.gguf","Q8_0"]}"#.to_vec()),
            Some(auth),
        );
        assert_eq!(s, 401, "auth {auth:?}");
    }
    assert!(
        srv.jobs().is_empty(),
        "an unauthenticated POST queued something"
    );
    let (s, b) = srv.request("GET", "/v1/jobs", None, None);
    assert_eq!((s, b.as_str()), (200, r#"{"jobs":[]}"#));
}

#[test]
fn serve_refuses_every_path_escape() {
    let root = TempDir::new("esc-root");
    let state = TempDir::new("esc-state");
    let outside = TempDir::new("esc-outside");
    synth(root.path(), "m.gguf", 1, 64, 1);
    synth(outside.path(), "secret.gguf", 1, 64, 2);
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let link =
        |target: &Path, name: &str| std::os::unix::fs::symlink(target, root.join(name)).unwrap();
    link(outside.path(), "out-dir-link");
    link(&outside.join("secret.gguf"), "out-file-link.gguf");
    link(&outside.join("not-there.gguf"), "dangling-out.gguf");
    std::os::unix::fs::symlink(outside.path(), root.join("sub/deep-link")).unwrap();
    link(&root.join("m.gguf"), "inside-link.gguf");
    let hf = root.join("hfdir");
    std::fs::create_dir_all(&hf).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.gguf"), hf.join("model.safetensors")).unwrap();
    // Defaults files are not read by jobs: their paths would not be checked against the root.
    std::fs::write(
        root.join(".qforge.toml"),
        format!(
            "[quantize]\nimatrix = {:?}\ndevice = \"nonsense\"\n",
            outside.join("secret.gguf").to_str().unwrap()
        ),
    )
    .unwrap();
    let srv = Server::start(root.path(), state.path(), &[]);
    let abs_out = outside.join("o.gguf").to_string_lossy().to_string();
    let abs_in = outside.join("secret.gguf").to_string_lossy().to_string();
    let cases: Vec<Vec<String>> = vec![
        vec![
            "quantize".into(),
            abs_in.clone(),
            "o.gguf".into(),
            "Q8_0".into(),
        ],
        vec![
            "quantize".into(),
            "m.gguf".into(),
            abs_out.clone(),
            "Q8_0".into(),
        ],
        vec![
            "quantize".into(),
            "m.gguf".into(),
            "../o.gguf".into(),
            "Q8_0".into(),
        ],
        vec![
            "quantize".into(),
            "m.gguf".into(),
            "sub/../../o.gguf".into(),
            "Q8_0".into(),
        ],
        vec!["quantize".into(), "./../o.gguf".into(), "Q8_0".into()],
        vec![
            "quantize".into(),
            "out-file-link.gguf".into(),
            "o.gguf".into(),
            "Q8_0".into(),
        ],
        vec![
            "quantize".into(),
            "m.gguf".into(),
            "out-dir-link/o.gguf".into(),
            "Q8_0".into(),
        ],
        vec![
            "quantize".into(),
            "m.gguf".into(),
            "dangling-out.gguf".into(),
            "Q8_0".into(),
        ],
        vec![
            "quantize".into(),
            "m.gguf".into(),
            "sub/deep-link/o.gguf".into(),
            "Q8_0".into(),
        ],
        // `..` after a symlink climbs from the link's target, not from sub/.
        vec![
            "quantize".into(),
            "m.gguf".into(),
            "sub/deep-link/../o.gguf".into(),
            "Q8_0".into(),
        ],
        vec![
            "quantize".into(),
            format!("--imatrix={abs_in}"),
            "m.gguf".into(),
            "o.gguf".into(),
            "Q4_K_M".into(),
        ],
        vec![
            "quantize".into(),
            "--imatrix".into(),
            "../imatrix.gguf".into(),
            "m.gguf".into(),
            "o.gguf".into(),
            "Q4_K_M".into(),
        ],
        vec![
            "convert".into(),
            "hfdir".into(),
            "--outtype".into(),
            "f16".into(),
            "-o".into(),
            "o.gguf".into(),
        ],
        vec![
            "convert".into(),
            "sub".into(),
            "--outtype".into(),
            "f16".into(),
            format!("-o{abs_out}"),
        ],
        vec![
            "convert".into(),
            "sub".into(),
            "--lora".into(),
            "../adapter:0.5".into(),
            "-o".into(),
            "o.gguf".into(),
        ],
        vec![
            "imatrix".into(),
            "-m".into(),
            "m.gguf".into(),
            "-f".into(),
            abs_in.clone(),
            "-o".into(),
            "i.gguf".into(),
        ],
    ];
    for args in &cases {
        let (s, v) = srv.post_json(&json!({ "args": args }));
        assert!(s == 403 || s == 400, "{args:?} → {s} {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{args:?}: {v}"
        );
    }
    assert!(srv.jobs().is_empty(), "a refused job was queued");
    // A symlink that stays inside the root is fine.
    let (s, v) = srv.submit(&["quantize", "inside-link.gguf", "o.gguf", "Q8_0", "1"]);
    assert_eq!(s, 201, "{v}");
    let j = srv.wait_finished(v["id"].as_i64().unwrap(), Duration::from_secs(120));
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(files_under(outside.path()), vec!["secret.gguf".to_string()]);
}

#[test]
fn serve_rejects_bad_requests_with_the_parsers_message() {
    let root = TempDir::new("bad-root");
    let state = TempDir::new("bad-state");
    let srv = Server::start(root.path(), state.path(), &[]);
    let post_raw = |b: &[u8]| srv.request("POST", "/v1/jobs", Some(b.to_vec()), None);
    for body in [
        &b"{not json"[..],
        b"",
        b"[1,2]",
        br#"{"args": "quantize"}"#,
        br#"{"args": []}"#,
        br#"{"args": ["quantize", 5]}"#,
    ] {
        let (s, b) = post_raw(body);
        assert_eq!(s, 400, "{:?} → {b}", String::from_utf8_lossy(body));
        let v: Value = serde_json::from_str(&b).unwrap();
        assert!(v["error"].is_string());
    }
    // Commands outside the list, and listed ones this build has not got (the parser says so).
    for cmd in ["synth", "serve", "batch", "info", "rm"] {
        let (s, v) = srv.submit(&[cmd, "x"]);
        assert_eq!(s, 400, "{cmd}: {v}");
        assert!(v["error"].as_str().unwrap().contains("not allowed"), "{v}");
    }
    // A listed command this build has is queued.
    let (s, v) = srv.submit(&["validate", "m.gguf"]);
    assert_eq!(s, 201, "{v}");
    // The parser's own messages: an unknown flag, a missing argument, an invalid type.
    let (s, v) = srv.submit(&["quantize", "--no-such-flag", "m.gguf", "o.gguf", "Q8_0"]);
    assert_eq!(s, 400);
    assert!(
        v["error"].as_str().unwrap().contains("--no-such-flag"),
        "{v}"
    );
    let (s, v) = srv.submit(&["quantize", "m.gguf", "o.gguf", "Q9_X"]);
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("Q9_X"), "{v}");
    let (s, v) = srv.submit(&[
        "sweep",
        "m.gguf",
        "--types",
        "Q4_K_M,BOGUS",
        "--eval",
        "t.txt",
        "-o",
        "sw",
    ]);
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("BOGUS"), "{v}");
    let (s, v) = srv.submit(&["quantize", "m.gguf", "o.gguf", "Q8_0", "two"]);
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("two"), "{v}");
    let (s, v) = srv.submit(&["quantize", "--help"]);
    assert_eq!(s, 400, "{v}");
    // 10 MB of body: refused before it is parsed.
    let mut big = br#"{"args": ["quantize", ""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 10 << 20));
    big.extend(br#"", "o.gguf", "Q8_0"]}"#);
    let (s, b) = post_raw(&big);
    assert_eq!(s, 413, "{b}");
    // Just under the limit is read (and refused for what it says, not for its size).
    let mut under = br#"{"args": ["quantize", "m.gguf", "o.gguf", "Q8_0"], "pad": ""#.to_vec();
    under.extend(std::iter::repeat_n(b' ', 1_000_000));
    under.extend(br#""}"#);
    let (s, b) = post_raw(&under);
    assert_eq!(s, 201, "{b}");
    // Routing.
    assert_eq!(srv.request("GET", "/v1/nothing", None, None).0, 404);
    assert_eq!(srv.request("GET", "/v1/jobs/999", None, None).0, 404);
    assert_eq!(srv.request("GET", "/v1/jobs/999/log", None, None).0, 404);
    assert_eq!(srv.request("DELETE", "/v1/jobs/999", None, None).0, 404);
    assert_eq!(srv.request("PUT", "/v1/jobs", None, None).0, 405);
    assert_eq!(srv.jobs().len(), 2);
}

#[test]
fn serve_outputs_equal_the_clis_and_survive_a_restart() {
    let root = TempDir::new("eq-root");
    let state = TempDir::new("eq-state");
    synth(root.path(), "in.gguf", 2, 256, 3);
    let mut srv = Server::start(root.path(), state.path(), &["--jobs", "2"]);
    // The issue's example, and the INPUT TYPE form (default output name).
    let (s, a) = srv.submit(&["quantize", "in.gguf", "out.gguf", "Q4_K_M", "2"]);
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["state"], "queued");
    assert_eq!(
        a["args"],
        json!(["quantize", "in.gguf", "out.gguf", "Q4_K_M", "2"])
    );
    std::fs::create_dir_all(root.join("q")).unwrap();
    std::fs::copy(root.join("in.gguf"), root.join("q/in.gguf")).unwrap();
    let (s, b) = srv.submit(&["quantize", "q/in.gguf", "Q8_0"]);
    assert_eq!(s, 201, "{b}");
    let (s, c) = srv.submit(&["quantize", "missing.gguf", "o.gguf", "Q8_0"]);
    assert_eq!(s, 201, "{c}");
    let ja = srv.wait_finished(a["id"].as_i64().unwrap(), Duration::from_secs(180));
    let jb = srv.wait_finished(b["id"].as_i64().unwrap(), Duration::from_secs(180));
    let jc = srv.wait_finished(c["id"].as_i64().unwrap(), Duration::from_secs(180));
    assert_eq!(ja["state"], "succeeded", "{ja}");
    assert_eq!(ja["progress"], 1.0);
    assert_eq!(ja["outputs"], json!(["out.gguf"]));
    let today = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%Y-%m-%d"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for k in ["created_at", "started_at", "finished_at"] {
        let t = ja[k].as_str().unwrap_or_else(|| panic!("{k}: {ja}"));
        assert!(t.ends_with('Z') && t.len() == 24, "{k}: {ja}");
        // The UTC day the system clock says (a run across midnight may see yesterday's).
        assert!(
            t.starts_with(today.trim()) || t < today.trim(),
            "{k}: {t} vs {today}"
        );
        assert!(t[..10] >= *"2020-01-01", "{k}: {t}");
    }
    assert!(ja["created_at"].as_str() <= ja["started_at"].as_str());
    assert!(ja["started_at"].as_str() <= ja["finished_at"].as_str());
    assert_eq!(jb["state"], "succeeded", "{jb}");
    assert_eq!(jb["outputs"], json!(["q/ggml-model-Q8_0.gguf"]));
    assert_eq!(jc["state"], "failed");
    assert!(
        jc["error"].as_str().unwrap().contains("missing.gguf"),
        "{jc}"
    );
    assert_eq!(
        std::fs::read(root.join("out.gguf")).unwrap(),
        cli_quantize(root.path(), "in.gguf", "Q4_K_M", "2"),
        "the server's output differs from the CLI's"
    );
    assert_eq!(
        std::fs::read(root.join("q/ggml-model-Q8_0.gguf")).unwrap(),
        cli_quantize(root.path(), "in.gguf", "Q8_0", "0")
    );
    let (s, log) = srv.request("GET", &format!("/v1/jobs/{}/log", a["id"]), None, None);
    assert_eq!(s, 200);
    assert!(log.contains("out.gguf"), "{log}");
    let before = srv.jobs();
    assert_eq!(before.len(), 3);
    // Finished jobs cannot be cancelled.
    assert_eq!(
        srv.request("DELETE", &format!("/v1/jobs/{}", a["id"]), None, None)
            .0,
        409
    );
    srv.kill9();
    let srv = Server::start(root.path(), state.path(), &[]);
    assert_eq!(srv.jobs(), before, "a restart changed finished jobs");
}

#[test]
fn serve_answers_64_concurrent_requests() {
    let root = TempDir::new("conc-root");
    let state = TempDir::new("conc-state");
    let srv = Server::start(root.path(), state.path(), &["--jobs", "2"]);
    let ids: Vec<i64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let srv = &srv;
                s.spawn(move || {
                    if i % 4 == 3 {
                        let (st, _) = srv.request("GET", "/v1/jobs", None, None);
                        assert_eq!(st, 200);
                        return None;
                    }
                    let name = format!("missing-{i}.gguf");
                    let (st, v) = srv.submit(&["quantize", &name, "o.gguf", "Q8_0", "1"]);
                    assert_eq!(st, 201, "{v}");
                    Some(v["id"].as_i64().unwrap())
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(ids.len(), 48);
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 48, "duplicate ids");
    assert_eq!(srv.jobs().len(), 48);
    // --jobs 2: never more than two at once.
    let mut most = 0;
    wait_for("all jobs to finish", Duration::from_secs(300), || {
        let jobs = srv.jobs();
        most = most.max(jobs.iter().filter(|j| j["state"] == "running").count());
        jobs.iter()
            .all(|j| !["queued", "running"].contains(&j["state"].as_str().unwrap()))
    });
    assert!(most <= 2, "{most} jobs ran at once");
    for id in ids {
        let j = srv.wait_finished(id, Duration::from_secs(300));
        assert_eq!(j["state"], "failed", "{j}");
        let name = j["args"][1].as_str().unwrap().to_string();
        assert!(j["error"].as_str().unwrap().contains(&name), "{j}");
    }
}

#[test]
fn serve_cancels_queued_and_running_jobs_and_caps_the_queue() {
    let root = TempDir::new("cancel-root");
    let state = TempDir::new("cancel-state");
    let model = slow_model(root.path());
    let srv = Server::start(
        root.path(),
        state.path(),
        &["--jobs", "1", "--max-queued", "1"],
    );
    let (s, run) = srv.submit(&["quantize", model, "slow.gguf", "Q4_K_M", "1"]);
    assert_eq!(s, 201);
    let run_id = run["id"].as_i64().unwrap();
    let (pid, _) = freeze_writer(root.path());
    assert_eq!(srv.job(run_id)["state"], "running");
    let (s, queued) = srv.submit(&["quantize", model, "later.gguf", "Q8_0", "1"]);
    assert_eq!(s, 201);
    assert_eq!(queued["state"], "queued");
    let (s, v) = srv.submit(&["quantize", model, "third.gguf", "Q8_0", "1"]);
    assert_eq!(s, 429, "{v}");
    // A queued job is cancelled at once and never runs.
    let (s, b) = srv.request("DELETE", &format!("/v1/jobs/{}", queued["id"]), None, None);
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["state"], "cancelled");
    // Progress: the temporary file's share of the planned size.
    wait_for("progress", Duration::from_secs(30), || {
        srv.job(run_id)["progress"]
            .as_f64()
            .is_some_and(|p| p > 0.0)
    });
    let p = srv.job(run_id)["progress"].as_f64().unwrap();
    assert!(p > 0.0 && p < 1.0, "{p}");
    // A job that answers signals: let it go on, cancel it; it stops and nothing of it remains.
    signal(pid, "-CONT");
    let t0 = Instant::now();
    let (s, b) = srv.request("DELETE", &format!("/v1/jobs/{run_id}"), None, None);
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "cancel took {:?}",
        t0.elapsed()
    );
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(v["finished_at"].is_string());
    wait_for("the job's process to end", Duration::from_secs(2), || {
        !pid_alive(pid)
    });
    assert!(!root.join("slow.gguf").exists());
    assert_eq!(temp_files(root.path()), Vec::<String>::new());
    // A job that cannot clean up (stopped): the server kills it and removes its temporary file.
    let (s, run2) = srv.submit(&["quantize", model, "slow.gguf", "Q4_K_M", "1"]);
    assert_eq!(s, 201);
    let (pid2, tmp2) = freeze_writer(root.path());
    let t0 = Instant::now();
    let (s, b) = srv.request("DELETE", &format!("/v1/jobs/{}", run2["id"]), None, None);
    assert_eq!(s, 200, "{b}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["state"], "cancelled", "{v}");
    wait_for(
        "the stopped job's process to end",
        Duration::from_secs(2),
        || !pid_alive(pid2),
    );
    assert!(!root.join(&tmp2).exists(), "{tmp2} left behind");
    assert_eq!(temp_files(root.path()), Vec::<String>::new());
    assert!(!root.join("slow.gguf").exists());
    // The cancelled queued job never started.
    assert_eq!(
        srv.job(queued["id"].as_i64().unwrap())["started_at"],
        Value::Null
    );
    assert!(!root.join("later.gguf").exists());
}

#[test]
fn serve_after_kill_9_marks_the_running_job_interrupted_and_leaves_no_partial_file() {
    let root = TempDir::new("k9-root");
    let state = TempDir::new("k9-state");
    let model = slow_model(root.path());
    let mut srv = Server::start(root.path(), state.path(), &["--jobs", "1"]);
    let (s, run) = srv.submit(&["quantize", model, "slow.gguf", "Q4_K_M", "1"]);
    assert_eq!(s, 201);
    let (s, queued) = srv.submit(&["quantize", model, "next.gguf", "Q8_0", "1"]);
    assert_eq!(s, 201);
    let id = run["id"].as_i64().unwrap();
    let (child_pid, tmp) = freeze_writer(root.path());
    srv.kill9();
    // The job's process dies with the server (parent-death signal), mid-write: its temporary
    // file stays behind, and nothing is at the output path.
    wait_for("the job's process to die", Duration::from_secs(5), || {
        !pid_alive(child_pid)
    });
    assert!(root.join(&tmp).exists());
    assert!(
        !root.join("slow.gguf").exists(),
        "a partial output at the output path"
    );
    let srv = Server::start(root.path(), state.path(), &["--jobs", "1"]);
    let j = srv.job(id);
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["error"], "interrupted");
    assert!(j["finished_at"].is_string());
    // The restart removed its temporary file; the queued job runs after the restart.
    assert!(!root.join(&tmp).exists(), "{tmp} survived the restart");
    let q = srv.wait_finished(queued["id"].as_i64().unwrap(), Duration::from_secs(300));
    assert_eq!(q["state"], "succeeded", "{q}");
    assert_eq!(temp_files(root.path()), Vec::<String>::new());
    assert!(!root.join("slow.gguf").exists());
    assert_eq!(
        srv.jobs()
            .iter()
            .filter(|j| j["state"] == "running")
            .count(),
        0
    );
}

// ---------------------------------------------------------------------------------------------
// batch

const ISSUE_RECIPE: &str = r#"[defaults]
threads = 2

[[job]]
model = "root/m.gguf"
types = ["Q8_0", "Q4_K_M"]
out = "batch/{stem}.{type}.gguf"
"#;

fn batch_json(dir: &Path, args: &[&str]) -> Value {
    let o = run_ok(qforge(dir).arg("batch").args(args).arg("--json"));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn statuses(v: &Value) -> Vec<String> {
    v["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["status"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn batch_runs_the_issues_recipe_as_written_and_resumes() {
    let dir = TempDir::new("batch");
    synth(dir.path(), "root/m.gguf", 2, 256, 5);
    std::fs::write(dir.join("recipe.toml"), ISSUE_RECIPE).unwrap();
    let o = run_ok(qforge(dir.path()).args(["batch", "recipe.toml"]));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("batch/m.Q8_0.gguf") && table.contains("batch/m.Q4_K_M.gguf"),
        "{table}"
    );
    assert!(table.contains("2 done"), "{table}");
    for ty in ["Q8_0", "Q4_K_M"] {
        let got = std::fs::read(dir.join(format!("batch/m.{ty}.gguf"))).unwrap();
        assert_eq!(
            got,
            cli_quantize(dir.path(), "root/m.gguf", ty, "2"),
            "{ty}"
        );
        let side: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("batch/m.{ty}.gguf.qforge.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            side["args"],
            json!([
                "quantize",
                "root/m.gguf",
                format!("batch/m.{ty}.gguf"),
                ty,
                "2"
            ])
        );
        assert_eq!(side["inputs"][0]["path"], "root/m.gguf");
        assert!(side["qforge_version"].is_string());
    }
    // From another directory: paths are the recipe's.
    let v = batch_json(Path::new("/"), &[dir.join("recipe.toml").to_str().unwrap()]);
    assert_eq!(statuses(&v), ["skipped", "skipped"]);
    // A changed input is redone; so is a changed option; a deleted output alone is redone.
    synth(dir.path(), "root/m.gguf", 2, 256, 6);
    let v = batch_json(dir.path(), &["recipe.toml"]);
    assert_eq!(statuses(&v), ["done", "done"]);
    assert_eq!(
        std::fs::read(dir.join("batch/m.Q8_0.gguf")).unwrap(),
        cli_quantize(dir.path(), "root/m.gguf", "Q8_0", "2")
    );
    std::fs::write(
        dir.join("recipe.toml"),
        ISSUE_RECIPE.replace("threads = 2", "threads = 1"),
    )
    .unwrap();
    assert_eq!(
        statuses(&batch_json(dir.path(), &["recipe.toml", "--dry-run"])),
        ["would-run", "would-run"]
    );
    assert_eq!(
        statuses(&batch_json(dir.path(), &["recipe.toml"])),
        ["done", "done"]
    );
    std::fs::remove_file(dir.join("batch/m.Q4_K_M.gguf")).unwrap();
    assert_eq!(
        statuses(&batch_json(dir.path(), &["recipe.toml"])),
        ["skipped", "done"]
    );
    // A truncated output (not written by qforge) is redone too.
    let p = dir.join("batch/m.Q8_0.gguf");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&p, &bytes).unwrap();
    assert_eq!(
        statuses(&batch_json(dir.path(), &["recipe.toml"])),
        ["done", "skipped"]
    );
    assert_eq!(
        std::fs::read(&p).unwrap(),
        cli_quantize(dir.path(), "root/m.gguf", "Q8_0", "1")
    );
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
}

#[test]
fn batch_resumes_after_being_killed() {
    let dir = TempDir::new("resume");
    synth(dir.path(), "root/big.gguf", 4, 1024, 9);
    std::fs::write(
        dir.join("recipe.toml"),
        r#"[defaults]
threads = 1

[[job]]
model = "root/big.gguf"
types = ["Q8_0", "Q6_K", "Q4_K_M", "Q5_K_M"]
out = "out/{stem}-{type}.gguf"
"#,
    )
    .unwrap();
    let mut child = qforge(dir.path())
        .args(["batch", "recipe.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first unit's record", Duration::from_secs(120), || {
        dir.join("out/big-Q8_0.gguf.qforge.json").exists()
    });
    // Kill it while the second unit is being written (its writer stopped mid-write first, so
    // the kill lands there however fast the machine is).
    let (writer, tmp) = freeze_writer(dir.path());
    assert!(tmp.contains("big-Q6_K.gguf."), "{tmp}");
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the unit's process to die", Duration::from_secs(5), || {
        !pid_alive(writer)
    });
    // Nothing at the output path; the killed writer's temporary file is left.
    assert!(!dir.join("out/big-Q6_K.gguf").exists());
    assert!(dir.join(&tmp).exists());
    let v = batch_json(dir.path(), &["recipe.toml", "--jobs", "2"]);
    assert_eq!(statuses(&v), ["skipped", "done", "done", "done"], "{v}");
    for ty in ["Q8_0", "Q6_K", "Q4_K_M", "Q5_K_M"] {
        assert_eq!(
            std::fs::read(dir.join(format!("out/big-{ty}.gguf"))).unwrap(),
            cli_quantize(dir.path(), "root/big.gguf", ty, "1"),
            "{ty}"
        );
    }
    assert_eq!(
        temp_files(dir.path()),
        Vec::<String>::new(),
        "the killed run's temporary file survived"
    );
    assert_eq!(
        statuses(&batch_json(dir.path(), &["recipe.toml"])),
        ["skipped"; 4]
    );
}

const SHARD_RECIPE: &str = r#"[defaults]
threads = 1
pure = false

[[job]]
name = "small"
model = "models/a.gguf"
types = ["Q8_0", "Q4_0", "Q6_K"]
out = "out/{name}/{stem}.{type}.gguf"

[[job]]
model = "models/b.gguf"
types = ["Q4_K_M", "Q5_0"]
out = "out/b/{type}.gguf"
leave_output_tensor = true
"#;

fn shard_fixture(dir: &Path) {
    synth(dir, "models/a.gguf", 1, 128, 11);
    synth(dir, "models/b.gguf", 2, 128, 12);
    std::fs::write(dir.join("recipe.toml"), SHARD_RECIPE).unwrap();
}

#[test]
fn batch_three_shards_at_once_equal_one_run() {
    let one = TempDir::new("shard-one");
    let many = TempDir::new("shard-many");
    for d in [&one, &many] {
        shard_fixture(d.path());
    }
    let whole = batch_json(one.path(), &["recipe.toml", "--jobs", "2"]);
    assert_eq!(statuses(&whole), ["done"; 5]);
    // Three shards at once, through the sbatch script shipped in docs/ (as a job array would).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/batch/qforge-batch.sbatch");
    let shards: Vec<Child> = (0..3)
        .map(|i| {
            Command::new("bash")
                .arg(&script)
                .arg("recipe.toml")
                .current_dir(many.path())
                .env("QFORGE", BIN)
                .env("SLURM_ARRAY_TASK_ID", i.to_string())
                .env("SLURM_ARRAY_TASK_COUNT", "3")
                .env("XDG_CONFIG_HOME", many.join(".xdg-config"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in shards {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let outs = |d: &Path| -> Vec<String> {
        files_under(&d.join("out"))
            .into_iter()
            .filter(|f| f.ends_with(".gguf"))
            .collect()
    };
    assert_eq!(outs(many.path()), outs(one.path()));
    assert_eq!(outs(one.path()).len(), 5);
    for f in outs(one.path()) {
        assert_eq!(
            std::fs::read(one.join("out").join(&f)).unwrap(),
            std::fs::read(many.join("out").join(&f)).unwrap(),
            "{f}"
        );
    }
    // Each shard ran its share of a stable order: unit i in shard i mod 3.
    let reports: Vec<String> = (0..3).map(|i| format!("reports/shard-{i}.json")).collect();
    for (i, r) in reports.iter().enumerate() {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(many.join(r)).unwrap()).unwrap();
        assert_eq!(v["shard"], json!([i, 3]));
        for u in v["units"].as_array().unwrap() {
            assert_eq!(u["index"].as_u64().unwrap() % 3, i as u64);
            assert_eq!(u["status"], "done");
        }
    }
    let mut args = vec!["--merge-reports"];
    args.extend(reports.iter().map(|s| s.as_str()));
    let merged = batch_json(many.path(), &args);
    assert_eq!(statuses(&merged), ["done"; 5]);
    let names = |v: &Value| -> Vec<String> {
        v["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["output"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&merged), names(&whole));
    // A missing shard is reported, and fails.
    let o = qforge(many.path())
        .args(["batch", "--merge-reports", &reports[0], &reports[2]])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("missing"));
}

#[test]
fn batch_refuses_bad_recipes_before_running_anything() {
    let dir = TempDir::new("badrecipe");
    synth(dir.path(), "m.gguf", 1, 64, 1);
    let cases = [
        ("[[job]]\nmodel = \"m.gguf\"\ntypes = [\"Q8_0\", \"Q4_0\"]\nout = \"o.gguf\"\n", "{type}"),
        ("[[job]]\nmodel = \"m.gguf\"\ntypes = [\"Q9_X\"]\nout = \"o.{type}.gguf\"\n", "Q9_X"),
        ("[[job]]\nmodel = \"m.gguf\"\ntypes = [\"Q8_0\"]\nout = \"o.{type}.gguf\"\nno_such = 1\n", "no-such"),
        ("[defaults]\nbogus_default = 1\n[[job]]\nmodel = \"m.gguf\"\ntypes = [\"Q8_0\"]\nout = \"o.{type}.gguf\"\n", "bogus"),
        ("[[job]]\nmodel = \"m.gguf\"\ntypes = [\"Q8_0\"]\nout = \"o.{kind}.gguf\"\n", "{kind}"),
        ("[[job]]\nmodel = \"m.gguf\"\ntypes = [\"Q8_0\"]\nout = \"same.gguf\"\n[[job]]\nmodel = \"m.gguf\"\ntypes = [\"Q4_0\"]\nout = \"same.gguf\"\n", "same.gguf"),
        ("[[job]]\ncommand = \"info\"\nmodel = \"m.gguf\"\ntypes = [\"Q8_0\"]\nout = \"o.gguf\"\n", "info"),
        ("[[job]]\nmodel = \"m.gguf\"\ntypes = [\"Q8_0\"]\nout = \"o.{type}.gguf\"\nthreads = \"x\"\n", "nthread"),
        ("[[job]\n", "recipe.toml"),
    ];
    for (text, needle) in cases {
        std::fs::write(dir.join("recipe.toml"), text).unwrap();
        let o = qforge(dir.path())
            .args(["batch", "recipe.toml"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{text}\n{err}");
        assert!(err.contains(needle), "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert_eq!(
            files_under(dir.path()),
            vec!["m.gguf".to_string(), "recipe.toml".to_string()]
        );
    }
    // A failing unit stops the batch (no new unit starts) unless --keep-going.
    std::fs::write(
        dir.join("recipe.toml"),
        "[[job]]\nmodel = \"gone.gguf\"\ntypes = [\"Q8_0\"]\nout = \"a.{type}.gguf\"\n[[job]]\nmodel = \"m.gguf\"\ntypes = [\"Q8_0\"]\nout = \"b.{type}.gguf\"\n",
    )
    .unwrap();
    let o = qforge(dir.path())
        .args(["batch", "recipe.toml", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(statuses(&v), ["failed", "not-run"]);
    assert!(
        v["units"][0]["error"]
            .as_str()
            .unwrap()
            .contains("gone.gguf"),
        "{v}"
    );
    let o = qforge(dir.path())
        .args(["batch", "recipe.toml", "--json", "--keep-going"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(statuses(&v), ["failed", "done"]);
    for bad in ["3/3", "1", "a/b", "0/0"] {
        let o = qforge(dir.path())
            .args(["batch", "recipe.toml", "--shard", bad])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "--shard {bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// The defaults file

#[test]
fn config_file_gives_defaults_and_flags_win() {
    let dir = TempDir::new("config");
    synth(dir.path(), "m.gguf", 1, 64, 1);
    let user = dir.join(".xdg-config/qforge/config.toml");
    std::fs::create_dir_all(user.parent().unwrap()).unwrap();
    std::fs::write(
        &user,
        "device = \"nonsense-device\"\ncache_dir = \"/var/cache/qforge\"\n",
    )
    .unwrap();
    // The user's file alone: its bad device reaches quantize, and the error names the file…
    let o = qforge(dir.path())
        .args(["quantize", "m.gguf", "o.gguf", "Q8_0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("nonsense-device"), "{err}");
    assert!(!dir.join("o.gguf").exists());
    // …while a flag wins over it.
    run_ok(qforge(dir.path()).args(["quantize", "--device", "cpu", "m.gguf", "o.gguf", "Q8_0"]));
    // The working directory's file wins over the user's; a command table over its top level.
    std::fs::write(
        dir.join(".qforge.toml"),
        "threads = 1\ndevice = \"gpu:7\"\n[quantize]\ndevice = \"cpu\"\n",
    )
    .unwrap();
    run_ok(qforge(dir.path()).args(["quantize", "m.gguf", "o2.gguf", "Q8_0"]));
    assert_eq!(
        std::fs::read(dir.join("o.gguf")).unwrap(),
        std::fs::read(dir.join("o2.gguf")).unwrap()
    );
    let o = run_ok(qforge(dir.path()).args(["config"]));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("threads = 1"), "{text}");
    assert!(
        text.contains(&dir.join(".qforge.toml").display().to_string()),
        "{text}"
    );
    assert!(text.contains(&user.display().to_string()), "{text}");
    let o = run_ok(qforge(dir.path()).args(["config", "--json"]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let find = |key: &str, cmd: Value, src: &Path| -> Value {
        v["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["key"] == key && s["command"] == cmd && s["source"] == src.to_str().unwrap()
            })
            .unwrap_or_else(|| panic!("{key} from {}: {v}", src.display()))
            .clone()
    };
    let local = dir.join(".qforge.toml");
    let q = find("device", json!("quantize"), &local);
    assert_eq!(
        (q["value"].clone(), q["overridden"].clone()),
        (json!("cpu"), json!(false))
    );
    assert_eq!(
        find("device", Value::Null, &local)["overridden"],
        json!(false)
    );
    assert_eq!(
        find("device", Value::Null, &user)["overridden"],
        json!(true)
    );
    let cache = find("cache_dir", Value::Null, &user);
    assert_eq!(cache["value"], "/var/cache/qforge");
    assert_eq!(cache["used_by"], json!(["pull"]));
    let t = find("threads", Value::Null, &local);
    assert!(
        t["used_by"]
            .as_array()
            .unwrap()
            .contains(&json!("quantize")),
        "{t}"
    );
    // A malformed file is an error naming it.
    std::fs::write(dir.join(".qforge.toml"), "threads = [\n").unwrap();
    let o = qforge(dir.path()).args(["config"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains(".qforge.toml"));
}

/// `../shared/golden` beside the checkout (QFORGE_SHARED overrides), as the other tests find it.
fn golden(rel: &str) -> PathBuf {
    let shared = std::env::var("QFORGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("golden").join(rel)
}

#[test]
fn batch_runs_convert_and_sweep_jobs_like_the_cli() {
    let src = golden("tiny-llama");
    if !src.join("config.json").exists() {
        println!(
            "skipping: no golden tiny-llama checkpoint at {}",
            src.display()
        );
        return;
    }
    let dir = TempDir::new("conv");
    std::fs::create_dir_all(dir.join("ckpt/tiny-llama")).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        std::fs::copy(e.path(), dir.join("ckpt/tiny-llama").join(e.file_name())).unwrap();
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runtime_data/ppl_text.txt"),
        dir.join("text.txt"),
    )
    .unwrap();
    std::fs::write(
        dir.join("recipe.toml"),
        r#"[defaults]
threads = 1
device = "cpu"

[[job]]
command = "convert"
model = "ckpt/tiny-llama"
types = ["f16", "Q4_0"]
out = "conv/{stem}.{type}.gguf"

[[job]]
command = "sweep"
name = "tl-sweep"
model = "ckpt/tiny-llama"
types = ["Q8_0", "Q4_K_M"]
eval = "text.txt"
ctx_size = 64
chunks = 2
out = "sweeps/{name}"
"#,
    )
    .unwrap();
    let v = batch_json(dir.path(), &["recipe.toml"]);
    assert_eq!(statuses(&v), ["done"; 3], "{v}");
    assert_eq!(v["units"][2]["type"], "Q8_0,Q4_K_M");
    for ty in ["f16", "Q4_0"] {
        let cli = format!("cli.{ty}.gguf");
        run_ok(qforge(dir.path()).args([
            "convert",
            "ckpt/tiny-llama",
            "--outtype",
            ty,
            "-o",
            &cli,
            "--threads",
            "1",
            "--device",
            "cpu",
        ]));
        assert_eq!(
            std::fs::read(dir.join(format!("conv/tiny-llama.{ty}.gguf"))).unwrap(),
            std::fs::read(dir.join(&cli)).unwrap(),
            "{ty}"
        );
    }
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("sweeps/tl-sweep/report.json")).unwrap(),
    )
    .unwrap();
    assert!(report.to_string().contains("Q4_K_M"), "{report}");
    assert_eq!(
        statuses(&batch_json(dir.path(), &["recipe.toml"])),
        ["skipped"; 3]
    );
    // The eval text is an input of the sweep: changing it redoes the sweep alone.
    std::fs::write(
        dir.join("text.txt"),
        std::fs::read_to_string(dir.join("text.txt")).unwrap() + " more",
    )
    .unwrap();
    assert_eq!(
        statuses(&batch_json(dir.path(), &["recipe.toml"])),
        ["skipped", "skipped", "done"]
    );
}
