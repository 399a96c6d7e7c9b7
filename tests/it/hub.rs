//! `qforge pull` and Hub model arguments against a stand-in Hugging Face Hub on loopback.
//!
//! The stand-in serves a folder (`ROOT/ORG/NAME/…` is repository `ORG/NAME`) through the
//! endpoints huggingface_hub calls: `/api/models/{repo}/revision/{rev}`, the paginated
//! `/api/models/{repo}/tree/{rev}?recursive=true`, and `/{repo}/resolve/{rev}/{path}`, which
//! answers LFS files with a 302 to a second host name (`localhost` vs `127.0.0.1`, another port:
//! the "CDN"). Faults on purpose: a connection cut mid-file, a corrupted body, a private repo, a
//! gated repo, 404s, a slow server. One connection per request (`Connection: close`), so a cut
//! is a real end of stream. Nothing here reaches the internet.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qforge::hub::{
    pull, resolve_model_arg, HubError, HubRef, HubSettings, PullEvent, PullOptions, RepoCache,
};
use sha1::Sha1;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// The stand-in Hub.

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn git_blob_sha1(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex(&h.finalize())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Access {
    Public,
    /// Needs [`GOOD_TOKEN`] (or [`GATE_OK_TOKEN`]).
    Private,
    /// Needs a token whose account accepted the terms: [`GATE_OK_TOKEN`].
    Gated,
}

const GOOD_TOKEN: &str = "hf_good_token";
const GATE_OK_TOKEN: &str = "hf_accepted_terms";

struct ServedFile {
    path: String,
    bytes: Vec<u8>,
    lfs: bool,
    /// Git blob sha1 of what git stores: the content, or the LFS pointer.
    oid: String,
    sha256: String,
}

struct ServedRepo {
    commit: String,
    files: Vec<ServedFile>,
}

#[derive(Default)]
struct Faults {
    /// Path → how many more responses to cut after half their body.
    cut: HashMap<String, usize>,
    /// Paths whose body is served with one byte flipped.
    corrupt: HashSet<String>,
    /// Throttle every file body to about this many bytes per second.
    slow_bps: Option<u64>,
    /// How many more Hub API requests to answer with 503.
    unavailable: usize,
}

#[derive(Clone, Debug)]
struct Logged {
    cdn: bool,
    method: String,
    target: String,
    range: Option<String>,
    auth: Option<String>,
}

struct StandIn {
    repos: HashMap<String, ServedRepo>,
    access: Mutex<HashMap<String, Access>>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Logged>>,
    hub_port: u16,
    cdn_port: u16,
}

/// Files at least this large, or of these kinds, are LFS files (as the Hub's .gitattributes).
fn is_lfs(path: &str, len: usize) -> bool {
    len >= 64 * 1024
        || [".safetensors", ".gguf", ".bin", ".model"]
            .iter()
            .any(|e| path.ends_with(e))
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if e.path().is_dir() {
            walk(&e.path(), &rel, out);
        } else {
            out.push((rel, e.path()));
        }
    }
}

impl StandIn {
    /// Serve every `ROOT/ORG/NAME` folder as a public repository.
    fn start(root: &Path) -> Arc<StandIn> {
        let mut repos = HashMap::new();
        for org in std::fs::read_dir(root).unwrap().flatten() {
            for name in std::fs::read_dir(org.path()).unwrap().flatten() {
                let id = format!(
                    "{}/{}",
                    org.file_name().to_string_lossy(),
                    name.file_name().to_string_lossy()
                );
                let mut paths = Vec::new();
                walk(&name.path(), "", &mut paths);
                let mut files = Vec::new();
                let mut commit = Sha1::new();
                for (rel, p) in paths {
                    let bytes = std::fs::read(&p).unwrap();
                    let lfs = is_lfs(&rel, bytes.len());
                    let sha256 = sha256_hex(&bytes);
                    let oid = if lfs {
                        let pointer = format!(
                            "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {}\n",
                            bytes.len()
                        );
                        git_blob_sha1(pointer.as_bytes())
                    } else {
                        git_blob_sha1(&bytes)
                    };
                    commit.update(format!("{rel}\0{oid}\0").as_bytes());
                    files.push(ServedFile {
                        path: rel,
                        bytes,
                        lfs,
                        oid,
                        sha256,
                    });
                }
                let commit = hex(&commit.finalize());
                repos.insert(id, ServedRepo { commit, files });
            }
        }
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Arc::new(StandIn {
            repos,
            access: Mutex::new(HashMap::new()),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            hub_port: hub.local_addr().unwrap().port(),
            cdn_port: cdn.local_addr().unwrap().port(),
        });
        for (listener, is_cdn) in [(hub, false), (cdn, true)] {
            let s = server.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    let s = s.clone();
                    std::thread::spawn(move || {
                        let _ = s.serve(conn, is_cdn);
                    });
                }
            });
        }
        server
    }

    /// The Hub's address (`HF_ENDPOINT`).
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.hub_port)
    }

    fn commit(&self, repo: &str) -> String {
        self.repos[repo].commit.clone()
    }

    fn file(&self, repo: &str, path: &str) -> &ServedFile {
        self.repos[repo]
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap()
    }

    fn total_size(&self, repo: &str) -> u64 {
        self.repos[repo]
            .files
            .iter()
            .map(|f| f.bytes.len() as u64)
            .sum()
    }

    fn set_access(&self, repo: &str, a: Access) {
        self.access.lock().unwrap().insert(repo.to_string(), a);
    }

    fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Requests for file bytes (resolve or CDN) whose target ends with `path_tail`.
    fn file_requests(&self, path_tail: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| {
                let path = l.target.split('?').next().unwrap_or("");
                (l.cdn || path.contains("/resolve/")) && path.ends_with(path_tail)
            })
            .collect()
    }

    fn serve(&self, mut conn: TcpStream, cdn: bool) -> std::io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        self.log.lock().unwrap().push(Logged {
            cdn,
            method: method.clone(),
            target: target.clone(),
            range: headers.get("range").cloned(),
            auth: headers.get("authorization").cloned(),
        });
        let busy = !cdn && target.starts_with("/api/") && {
            let mut f = self.faults.lock().unwrap();
            let busy = f.unavailable > 0;
            f.unavailable = f.unavailable.saturating_sub(1);
            busy
        };
        let reply = if busy {
            Reply::status(503, None)
        } else if cdn {
            self.route_cdn(&target)
        } else {
            self.route_hub(&target, headers.get("authorization").map(String::as_str))
        };
        self.write_reply(
            &mut conn,
            reply,
            &method,
            headers.get("range").map(String::as_str),
        )
    }

    fn route_cdn(&self, target: &str) -> Reply {
        // /cdn/{repo}/{sha256}/{path} (the path only so logs and faults can name the file).
        let rest = target.strip_prefix("/cdn/").unwrap_or("");
        let mut it = rest.splitn(4, '/');
        let (Some(org), Some(name), Some(_sha), Some(path)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Reply::status(404, None);
        };
        let path = path.split('?').next().unwrap_or("");
        let repo = format!("{org}/{name}");
        match self
            .repos
            .get(&repo)
            .and_then(|r| r.files.iter().find(|f| f.path == path))
        {
            Some(f) => Reply::file(f, Vec::new()),
            None => Reply::status(404, None),
        }
    }

    fn route_hub(&self, target: &str, auth: Option<&str>) -> Reply {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let segs: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let (repo_id, rest): (String, Vec<String>) = if segs.first().map(String::as_str)
            == Some("api")
            && segs.get(1).map(String::as_str) == Some("models")
            && segs.len() >= 4
        {
            (format!("{}/{}", segs[2], segs[3]), segs[4..].to_vec())
        } else if segs.len() >= 2 {
            (format!("{}/{}", segs[0], segs[1]), segs[2..].to_vec())
        } else {
            return Reply::status(404, None);
        };
        // A renamed repository: the Hub redirects every request to the new name, same host.
        if repo_id == "test-org/renamed" {
            let mut r = Reply::status(307, None);
            r.headers.push((
                "Location".to_string(),
                target.replace("test-org/renamed", "test-org/small"),
            ));
            return r;
        }
        let Some(repo) = self.repos.get(&repo_id) else {
            return Reply::status(401, Some("RepoNotFound"));
        };
        let token = auth.and_then(|a| a.strip_prefix("Bearer "));
        let access = self
            .access
            .lock()
            .unwrap()
            .get(&repo_id)
            .copied()
            .unwrap_or(Access::Public);
        match (access, token) {
            (Access::Public, _) => {}
            (_, Some(t)) if t != GOOD_TOKEN && t != GATE_OK_TOKEN => {
                return Reply::status(401, None); // invalid credentials
            }
            (Access::Private, None) => return Reply::status(401, Some("RepoNotFound")),
            (Access::Private, Some(_)) => {}
            (Access::Gated, None) => return Reply::status(401, Some("GatedRepo")),
            (Access::Gated, Some(t)) if t != GATE_OK_TOKEN => {
                return Reply::status(403, Some("GatedRepo"))
            }
            (Access::Gated, Some(_)) => {}
        }
        let rev_ok = |rev: &str| rev == "main" || rev == repo.commit;
        let is_api = segs[0] == "api";
        match rest.first().map(String::as_str) {
            Some("revision") if is_api => {
                let rev = rest.get(1).cloned().unwrap_or_default();
                if !rev_ok(&rev) {
                    return Reply::status(404, Some("RevisionNotFound"));
                }
                let siblings: Vec<_> = repo
                    .files
                    .iter()
                    .map(|f| serde_json::json!({ "rfilename": f.path }))
                    .collect();
                let body = serde_json::json!({
                    "_id": "0", "id": repo_id, "modelId": repo_id, "sha": repo.commit,
                    "private": access == Access::Private,
                    "gated": if access == Access::Gated { serde_json::json!("manual") } else { serde_json::json!(false) },
                    "disabled": false, "downloads": 0, "likes": 0, "tags": [],
                    "siblings": siblings,
                });
                Reply::json(body.to_string(), Vec::new())
            }
            Some("tree") if is_api => {
                let rev = rest.get(1).cloned().unwrap_or_default();
                if !rev_ok(&rev) {
                    return Reply::status(404, Some("RevisionNotFound"));
                }
                // Two entries a page, so every listing exercises the Link pagination.
                let cursor: usize = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("cursor="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut entries = Vec::new();
                let mut dirs = HashSet::new();
                for f in &repo.files {
                    let mut p = String::new();
                    for comp in f
                        .path
                        .split('/')
                        .rev()
                        .skip(1)
                        .collect::<Vec<_>>()
                        .iter()
                        .rev()
                    {
                        if !p.is_empty() {
                            p.push('/');
                        }
                        p.push_str(comp);
                        if dirs.insert(p.clone()) {
                            entries.push(serde_json::json!({"type": "directory", "oid": "0", "size": 0, "path": p}));
                        }
                    }
                    let mut e = serde_json::json!({
                        "type": "file", "oid": f.oid, "size": f.bytes.len(), "path": f.path,
                    });
                    if f.lfs {
                        e["lfs"] = serde_json::json!({
                            "oid": f.sha256, "size": f.bytes.len(), "pointerSize": 134,
                        });
                    }
                    entries.push(e);
                }
                let page: Vec<_> = entries.iter().skip(cursor).take(2).cloned().collect();
                let mut headers = Vec::new();
                if cursor + 2 < entries.len() {
                    headers.push((
                        "Link".to_string(),
                        format!(
                            "<{}/api/models/{repo_id}/tree/{rev}?recursive=true&expand=false&cursor={}>; rel=\"next\"",
                            self.endpoint(),
                            cursor + 2
                        ),
                    ));
                }
                Reply::json(serde_json::Value::Array(page).to_string(), headers)
            }
            Some("resolve") if !is_api && rest.len() >= 3 => {
                if !rev_ok(&rest[1]) {
                    return Reply::status(404, Some("RevisionNotFound"));
                }
                let fpath = rest[2..].join("/");
                let Some(f) = repo.files.iter().find(|f| f.path == fpath) else {
                    return Reply::status(404, Some("EntryNotFound"));
                };
                let mut headers = vec![("X-Repo-Commit".to_string(), repo.commit.clone())];
                if f.lfs {
                    headers.extend([
                        ("X-Linked-Etag".to_string(), format!("\"{}\"", f.sha256)),
                        ("X-Linked-Size".to_string(), f.bytes.len().to_string()),
                        ("ETag".to_string(), format!("\"{}\"", f.oid)),
                        (
                            "Location".to_string(),
                            format!(
                                "http://localhost:{}/cdn/{repo_id}/{}/{}?X-Amz-Signature=stand-in",
                                self.cdn_port, f.sha256, f.path
                            ),
                        ),
                    ]);
                    Reply {
                        status: 302,
                        headers,
                        body: Vec::new(),
                        file: None,
                    }
                } else {
                    headers.push(("ETag".to_string(), format!("\"{}\"", f.oid)));
                    Reply::file(f, headers)
                }
            }
            _ => Reply::status(404, None),
        }
    }

    fn write_reply(
        &self,
        conn: &mut TcpStream,
        mut reply: Reply,
        method: &str,
        range: Option<&str>,
    ) -> std::io::Result<()> {
        let mut cut_after = None;
        let mut slow = None;
        if let Some(path) = &reply.file {
            let mut faults = self.faults.lock().unwrap();
            if faults.corrupt.contains(path) && !reply.body.is_empty() {
                let mid = reply.body.len() / 2;
                reply.body[mid] ^= 0x5a;
            }
            slow = faults.slow_bps;
            if method == "GET" {
                if let Some(n) = faults.cut.get_mut(path) {
                    if *n > 0 {
                        *n -= 1;
                        cut_after = Some(());
                    }
                }
            }
            // Range requests: bytes=N-
            if let Some(start) = range
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok())
            {
                let total = reply.body.len();
                if start >= total {
                    reply = Reply::status(416, None);
                } else {
                    reply.status = 206;
                    reply.headers.push((
                        "Content-Range".to_string(),
                        format!("bytes {start}-{}/{total}", total - 1),
                    ));
                    reply.body.drain(..start);
                }
            }
        }
        let reason = match reply.status {
            200 => "OK",
            206 => "Partial Content",
            302 => "Found",
            307 => "Temporary Redirect",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            416 => "Range Not Satisfiable",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            reply.body.len()
        ));
        conn.write_all(head.as_bytes())?;
        if method == "HEAD" {
            return conn.flush();
        }
        let body = &reply.body;
        let send_len = if cut_after.is_some() {
            body.len() / 2
        } else {
            body.len()
        };
        match slow {
            Some(bps) => {
                let chunk = 4096usize;
                let pause = Duration::from_secs_f64(chunk as f64 / bps as f64);
                for piece in body[..send_len].chunks(chunk) {
                    conn.write_all(piece)?;
                    std::thread::sleep(pause);
                }
            }
            None => conn.write_all(&body[..send_len])?,
        }
        conn.flush()?;
        // A cut: the stream ends short of Content-Length.
        conn.shutdown(Shutdown::Both)
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The repository path when the body is a file's content (faults apply).
    file: Option<String>,
}

impl Reply {
    fn status(status: u16, code: Option<&str>) -> Reply {
        let mut headers = Vec::new();
        if let Some(c) = code {
            headers.push(("X-Error-Code".to_string(), c.to_string()));
            headers.push(("X-Error-Message".to_string(), format!("{c} (stand-in)")));
        }
        Reply {
            status,
            headers,
            body: Vec::new(),
            file: None,
        }
    }

    fn json(body: String, mut headers: Vec<(String, String)>) -> Reply {
        headers.push(("Content-Type".to_string(), "application/json".to_string()));
        Reply {
            status: 200,
            headers,
            body: body.into_bytes(),
            file: None,
        }
    }

    fn file(f: &ServedFile, mut headers: Vec<(String, String)>) -> Reply {
        headers.push(("Accept-Ranges".to_string(), "bytes".to_string()));
        Reply {
            status: 200,
            headers,
            body: f.bytes.clone(),
            file: Some(f.path.clone()),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

static SERIAL: AtomicU64 = AtomicU64::new(0);

/// The temporary folders a test thread made, removed when the thread (the test) ends.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = const { std::cell::RefCell::new(Scratch(Vec::new())) };
}

/// A fresh temporary folder for one test (removed when the test's thread ends).
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "qforge-hub-{tag}-{}-{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    SCRATCH.with(|s| s.borrow_mut().0.push(d.clone()));
    d
}

/// Deterministic bytes that do not compress or repeat.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The shared golden folder (`../shared/golden` beside the checkout, or `$QFORGE_SHARED/golden`).
fn golden(rel: &str) -> PathBuf {
    let shared = std::env::var("QFORGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("golden").join(rel)
}

/// A Hub folder with:
/// - `test-org/small`: config.json (plain git file), model.safetensors (LFS, 300 KiB),
///   `nested/dir/notes.txt` (plain);
/// - `test-org/ggufs`: two .gguf files, `test-org/one-gguf`: one .gguf and a README;
/// - `test-org/both`: config.json, model.safetensors and a duplicate pytorch_model.bin.
fn hub_folder() -> PathBuf {
    let root = temp_dir("served");
    let small = root.join("test-org/small");
    write(
        &small.join("config.json"),
        br#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}"#,
    );
    write(&small.join("model.safetensors"), &noise(300 * 1024, 1));
    write(
        &small.join("nested/dir/notes.txt"),
        b"a nested plain file\n",
    );
    let ggufs = root.join("test-org/ggufs");
    write(&ggufs.join("m.Q4_K_M.gguf"), &noise(5000, 2));
    write(&ggufs.join("m.Q8_0.gguf"), &noise(7000, 3));
    let one = root.join("test-org/one-gguf");
    write(&one.join("README.md"), b"# one gguf\n");
    write(&one.join("model-f16.gguf"), &noise(9000, 4));
    let both = root.join("test-org/both");
    write(&both.join("config.json"), b"{}");
    write(&both.join("model.safetensors"), &noise(2000, 5));
    write(&both.join("pytorch_model.bin"), &noise(2000, 6));
    root
}

/// Settings for `server` and a fresh cache, with fast retries.
fn settings(server: &StandIn, cache: &Path) -> HubSettings {
    HubSettings {
        endpoint: server.endpoint(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
        retries: 4,
        backoff: Duration::from_millis(20),
        read_timeout: Duration::from_secs(10),
    }
}

/// Collects every event of a pull.
#[derive(Default)]
struct Events(Mutex<Vec<PullEvent>>);

impl Events {
    fn observer(&self) -> impl Fn(&PullEvent) + Sync + '_ {
        move |e| self.0.lock().unwrap().push(e.clone())
    }
    fn take(&self) -> Vec<PullEvent> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

fn pull_all(repo: &str, s: &HubSettings) -> Result<qforge::hub::PullReport, HubError> {
    pull(repo, &PullOptions::default(), s, &|_| {})
}

fn assert_snapshot_matches(server: &StandIn, repo: &str, snapshot: &Path) {
    for f in &server.repos[repo].files {
        let p = snapshot.join(&f.path);
        let got = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(got == f.bytes, "{}: content differs", p.display());
    }
}

/// `qforge` with the Hub environment pointing at `server` and `cache`, nothing else inherited
/// from the user's Hub setup.
fn qforge(server: &StandIn, cache: &Path, home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qforge"));
    for k in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_OFFLINE",
        "HF_TOKEN_PATH",
        "HUGGINGFACE_HUB_CACHE",
    ] {
        c.env_remove(k);
    }
    c.env("HF_ENDPOINT", server.endpoint())
        .env("HF_HUB_CACHE", cache)
        .env("HF_HOME", home);
    c
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn pull_fills_huggingface_hubs_cache_layout() {
    let server = StandIn::start(&hub_folder());
    let cache = temp_dir("cache");
    let mut s = settings(&server, &cache);
    s.token = Some(GOOD_TOKEN.to_string());
    let events = Events::default();
    let r = pull(
        "test-org/small",
        &PullOptions::default(),
        &s,
        &events.observer(),
    )
    .unwrap();
    let commit = server.commit("test-org/small");
    assert_eq!(r.commit, commit);
    assert_eq!(r.files.len(), 3);
    assert_eq!(r.cached_files, 0);
    let root = cache.join("models--test-org--small");
    assert_eq!(r.snapshot, root.join("snapshots").join(&commit));
    assert_eq!(
        std::fs::read_to_string(root.join("refs/main")).unwrap(),
        commit
    );
    assert_snapshot_matches(&server, "test-org/small", &r.snapshot);
    // Blobs are named by their ETag: sha256 for LFS, git blob sha1 otherwise; pointers are
    // relative symlinks into ../../blobs (one more ../ per folder level).
    for f in &server.repos["test-org/small"].files {
        let etag = if f.lfs { &f.sha256 } else { &f.oid };
        let blob = root.join("blobs").join(etag);
        assert_eq!(std::fs::read(&blob).unwrap(), f.bytes, "{}", f.path);
        let link = std::fs::read_link(r.snapshot.join(&f.path)).unwrap();
        let depth = f.path.split('/').count() + 1;
        let expected: PathBuf = std::iter::repeat_n("..", depth)
            .chain(["blobs", etag.as_str()])
            .collect();
        assert_eq!(link, expected, "{}", f.path);
    }
    // No leftovers, and a lock file per blob under .locks.
    let leftovers: Vec<_> = std::fs::read_dir(root.join("blobs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty());
    assert!(cache.join(".locks/models--test-org--small").is_dir());
    // The LFS file came from the second host, without the token; the Hub got the token.
    let cdn: Vec<_> = server.log().into_iter().filter(|l| l.cdn).collect();
    assert_eq!(cdn.len(), 1, "{cdn:?}");
    assert!(cdn[0].target.contains("model.safetensors"));
    assert_eq!(
        cdn[0].auth, None,
        "the token must not travel to the CDN host"
    );
    assert!(server
        .log()
        .iter()
        .filter(|l| !l.cdn)
        .all(|l| l.auth.as_deref() == Some(&format!("Bearer {GOOD_TOKEN}"))));
    // The tree listing was paginated (two entries a page) and followed to the end.
    assert!(
        server
            .log()
            .iter()
            .filter(|l| l.target.contains("/tree/"))
            .count()
            >= 3
    );
    let ev = events.take();
    let total = server.total_size("test-org/small");
    assert!(ev.iter().any(|e| matches!(e, PullEvent::Plan { files: 3, cached_files: 0, bytes_to_fetch, .. } if *bytes_to_fetch == total)));
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, PullEvent::FileDone { .. }))
            .count(),
        3
    );

    // qforge needs no HEAD requests: the tree listing carries sizes and hashes.
    assert!(server.log().iter().all(|l| l.method == "GET"));
    // A second pull of the complete snapshot downloads nothing.
    server.clear_log();
    let again = pull_all("test-org/small", &s).unwrap();
    assert_eq!(again.downloaded_bytes, 0);
    assert_eq!(again.cached_files, 3);
    assert!(server.file_requests("").is_empty(), "{:?}", server.log());
}

#[test]
fn cut_connection_is_resumed_with_range() {
    let server = StandIn::start(&hub_folder());
    server
        .faults
        .lock()
        .unwrap()
        .cut
        .insert("model.safetensors".to_string(), 2);
    let cache = temp_dir("cut");
    let events = Events::default();
    let s = settings(&server, &cache);
    let r = pull(
        "test-org/small",
        &PullOptions::default(),
        &s,
        &events.observer(),
    )
    .unwrap();
    assert_snapshot_matches(&server, "test-org/small", &r.snapshot);
    let reqs: Vec<_> = server
        .file_requests("model.safetensors")
        .into_iter()
        .filter(|l| l.cdn)
        .collect();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    // Each retry asks only for what is missing.
    let half = 300 * 1024 / 2;
    assert_eq!(reqs[1].range.as_deref(), Some(&*format!("bytes={half}-")));
    let quarter = (300 * 1024 - half) / 2;
    assert_eq!(
        reqs[2].range.as_deref(),
        Some(&*format!("bytes={}-", half + quarter))
    );
    let retries = events
        .take()
        .into_iter()
        .filter(|e| matches!(e, PullEvent::Retry { path, .. } if path == "model.safetensors"))
        .count();
    assert_eq!(retries, 2);
    // Only the bytes that were missing crossed the network twice: half + quarter + rest.
    assert_eq!(r.downloaded_bytes, server.total_size("test-org/small"));
}

#[test]
fn corrupted_bodies_are_refused_and_removed() {
    let server = StandIn::start(&hub_folder());
    let cache = temp_dir("corrupt");
    let s = settings(&server, &cache);
    for (path, algorithm, expected) in [
        (
            "model.safetensors",
            "sha256",
            server
                .file("test-org/small", "model.safetensors")
                .sha256
                .clone(),
        ),
        (
            "config.json",
            "git blob sha1",
            server.file("test-org/small", "config.json").oid.clone(),
        ),
    ] {
        server.faults.lock().unwrap().corrupt = HashSet::from([path.to_string()]);
        let err = pull_all("test-org/small", &s).unwrap_err();
        let HubError::ChecksumMismatch {
            path: p,
            algorithm: a,
            expected: e,
            actual,
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(
            (p.as_str(), *a, e.as_str()),
            (path, algorithm, expected.as_str())
        );
        let mut bad = server.file("test-org/small", path).bytes.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x5a;
        let bad_hash = if algorithm == "sha256" {
            sha256_hex(&bad)
        } else {
            git_blob_sha1(&bad)
        };
        assert_eq!(actual, &bad_hash);
        let msg = err.to_string();
        assert!(
            msg.contains(path) && msg.contains(&expected) && msg.contains(&bad_hash),
            "{msg}"
        );
        // Nothing of the bad bytes is kept or linked.
        let cache_repo = RepoCache::new(&cache, "test-org/small");
        assert!(!cache_repo.incomplete_path(&expected).exists());
        assert!(!cache_repo.blob_path(&expected).exists());
        let pointer = cache_repo.pointer_path(&server.commit("test-org/small"), path);
        assert!(
            std::fs::symlink_metadata(&pointer).is_err(),
            "{path} linked"
        );
    }
    // Fixed in transit: the next pull completes.
    server.faults.lock().unwrap().corrupt.clear();
    let r = pull_all("test-org/small", &s).unwrap();
    assert_snapshot_matches(&server, "test-org/small", &r.snapshot);
}

#[test]
fn private_and_gated_repos_say_what_to_do() {
    let server = StandIn::start(&hub_folder());
    server.set_access("test-org/small", Access::Private);
    server.set_access("test-org/one-gguf", Access::Gated);
    let cache = temp_dir("auth");
    let mut s = settings(&server, &cache);

    let err = pull_all("test-org/small", &s).unwrap_err();
    assert!(
        matches!(
            err,
            HubError::RepoNotFound {
                token_sent: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    let err = pull_all("test-org/one-gguf", &s).unwrap_err();
    assert!(
        matches!(
            err,
            HubError::Gated {
                token_sent: false,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("HF_TOKEN") && msg.contains("accept its terms"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{}/test-org/one-gguf", server.endpoint())),
        "{msg}"
    );

    s.token = Some("hf_wrong".to_string());
    let err = pull_all("test-org/small", &s).unwrap_err();
    assert!(
        matches!(err, HubError::TokenRejected { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    s.token = Some(GOOD_TOKEN.to_string());
    let r = pull_all("test-org/small", &s).unwrap();
    assert_snapshot_matches(&server, "test-org/small", &r.snapshot);
    // A renamed repository redirects on the Hub's own host: the token follows it there (and
    // still never to the CDN host).
    server.clear_log();
    let r = pull_all("test-org/renamed", &s).unwrap();
    assert_snapshot_matches(&server, "test-org/small", &r.snapshot);
    assert!(server
        .log()
        .iter()
        .any(|l| l.target.contains("test-org/renamed")));
    assert!(
        server.log().iter().all(|l| l.cdn == l.auth.is_none()),
        "{:?}",
        server.log()
    );
    let err = pull_all("test-org/one-gguf", &s).unwrap_err();
    assert!(
        matches!(
            err,
            HubError::Gated {
                token_sent: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("accept its terms"), "{err}");
    assert!(std::fs::read_dir(cache.join("models--test-org--one-gguf/snapshots")).is_err());

    s.token = Some(GATE_OK_TOKEN.to_string());
    let r = pull_all("test-org/one-gguf", &s).unwrap();
    assert_snapshot_matches(&server, "test-org/one-gguf", &r.snapshot);
}

#[test]
fn not_found_says_which_of_repo_revision_or_file() {
    let server = StandIn::start(&hub_folder());
    let cache = temp_dir("404");
    let s = settings(&server, &cache);
    let err = pull_all("test-org/nope", &s).unwrap_err();
    assert!(
        matches!(&err, HubError::RepoNotFound { repo, .. } if repo == "test-org/nope"),
        "{err}"
    );
    let opts = PullOptions {
        revision: Some("v9".to_string()),
        ..Default::default()
    };
    let err = pull("test-org/small", &opts, &s, &|_| {}).unwrap_err();
    assert!(
        matches!(&err, HubError::RevisionNotFound { revision, .. } if revision == "v9"),
        "{err}"
    );
    assert!(err.to_string().contains("\"v9\""), "{err}");
    let arg = Path::new("hf://test-org/small/missing.gguf");
    let err = resolve_model_arg(arg, &s, &|_| {}).unwrap_err();
    assert!(
        matches!(&err, HubError::FileNotFound { path, .. } if path == "missing.gguf"),
        "{err}"
    );
    let opts = PullOptions {
        include: vec!["*.xyz".to_string()],
        ..Default::default()
    };
    let err = pull("test-org/small", &opts, &s, &|_| {}).unwrap_err();
    assert!(matches!(err, HubError::NothingSelected { .. }), "{err}");
}

#[test]
fn slow_server_reports_progress() {
    let server = StandIn::start(&hub_folder());
    server.faults.lock().unwrap().slow_bps = Some(400 * 1024);
    let cache = temp_dir("slow");
    let s = settings(&server, &cache);
    let events = Events::default();
    let opts = PullOptions {
        include: vec!["*.safetensors".to_string()],
        ..Default::default()
    };
    let t = Instant::now();
    pull("test-org/small", &opts, &s, &events.observer()).unwrap();
    assert!(t.elapsed() > Duration::from_millis(500));
    let ev = events.take();
    let bytes: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            PullEvent::Bytes { n, .. } => Some(*n),
            _ => None,
        })
        .collect();
    // Progress arrives in pieces while the transfer runs, and adds up to the file.
    assert!(bytes.len() >= 10, "{} progress events", bytes.len());
    assert_eq!(bytes.iter().sum::<u64>(), 300 * 1024);
    assert!(
        matches!(ev[0], PullEvent::Plan { bytes_to_fetch, files: 1, .. } if bytes_to_fetch == 300 * 1024)
    );
}

#[test]
fn offline_mode_uses_only_the_cache() {
    let server = StandIn::start(&hub_folder());
    let cache = temp_dir("offline");
    let mut s = settings(&server, &cache);
    s.offline = true;
    let err = pull_all("test-org/small", &s).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err}");
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
    assert!(server.log().is_empty());

    s.offline = false;
    let online = pull_all("test-org/small", &s).unwrap();
    server.clear_log();
    s.offline = true;
    let r = pull_all("test-org/small", &s).unwrap();
    assert!(r.from_cache_only);
    assert_eq!(r.snapshot, online.snapshot);
    assert_eq!(r.files.len(), 3);
    assert!(
        server.log().is_empty(),
        "offline asked the Hub: {:?}",
        server.log()
    );
    let p = resolve_model_arg(Path::new("test-org/small"), &s, &|_| {}).unwrap();
    assert_eq!(p, online.snapshot);
    assert!(server.log().is_empty());

    // Unreachable Hub (nothing listens): the cached snapshot answers, with a notice.
    s.offline = false;
    s.endpoint = format!("http://127.0.0.1:{}", free_port());
    s.retries = 0;
    let events = Events::default();
    let r = pull(
        "test-org/small",
        &PullOptions::default(),
        &s,
        &events.observer(),
    )
    .unwrap();
    assert!(r.from_cache_only);
    assert!(events
        .take()
        .iter()
        .any(|e| matches!(e, PullEvent::UsingCache { .. })));
    let err = pull_all("test-org/ggufs", &s).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn include_exclude_and_jobs() {
    let server = StandIn::start(&hub_folder());
    let cache = temp_dir("select");
    let s = settings(&server, &cache);
    let opts = PullOptions {
        include: vec!["*.json".to_string(), "nested/".to_string()],
        jobs: 3,
        ..Default::default()
    };
    let r = pull("test-org/small", &opts, &s, &|_| {}).unwrap();
    let mut files = r.files.clone();
    files.sort();
    assert_eq!(files, ["config.json", "nested/dir/notes.txt"]);
    assert!(!r.snapshot.join("model.safetensors").exists());
    let opts = PullOptions {
        exclude: vec!["nested/*".to_string(), "*.json".to_string()],
        jobs: 3,
        ..Default::default()
    };
    let r = pull("test-org/small", &opts, &s, &|_| {}).unwrap();
    assert_eq!(r.files, ["model.safetensors"]);
    assert_eq!(r.cached_files, 0);
    assert_snapshot_matches(&server, "test-org/small", &r.snapshot);
}

#[test]
fn concurrent_pulls_of_one_repo_share_the_work_safely() {
    let server = StandIn::start(&hub_folder());
    server.faults.lock().unwrap().slow_bps = Some(1024 * 1024);
    let cache = temp_dir("concurrent");
    let s = settings(&server, &cache);
    let results: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..3)
            .map(|_| sc.spawn(|| pull_all("test-org/small", &s)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results {
        let r = r.unwrap();
        assert_snapshot_matches(&server, "test-org/small", &r.snapshot);
    }
    // The blob lock made the later pulls wait and find the blob done: fetched once.
    let fetched = server
        .file_requests("model.safetensors")
        .into_iter()
        .filter(|l| l.cdn)
        .count();
    assert_eq!(fetched, 1);
}

#[test]
fn disk_full_links_nothing() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full to simulate a full disk");
        return;
    }
    let server = StandIn::start(&hub_folder());
    let cache = temp_dir("full");
    let s = settings(&server, &cache);
    let sha = server
        .file("test-org/small", "model.safetensors")
        .sha256
        .clone();
    let repo = RepoCache::new(&cache, "test-org/small");
    // Every write into this blob's .incomplete hits a device that is always full.
    std::fs::create_dir_all(repo.blob_path("x").parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/dev/full", repo.incomplete_path(&sha)).unwrap();
    let err = pull_all("test-org/small", &s).unwrap_err();
    assert!(
        matches!(&err, HubError::DiskFull { path } if path.ends_with(format!("{sha}.incomplete"))),
        "{err}"
    );
    assert!(err.to_string().contains("disk full"), "{err}");
    let pointer = repo.pointer_path(&server.commit("test-org/small"), "model.safetensors");
    assert!(std::fs::symlink_metadata(pointer).is_err());
    assert!(!repo.blob_path(&sha).exists());
}

#[test]
fn hub_references_parse() {
    let r = HubRef::parse("org/name").unwrap();
    assert_eq!(
        (r.repo.as_str(), r.revision, r.path),
        ("org/name", None, None)
    );
    let r = HubRef::parse("org/name@v1.0").unwrap();
    assert_eq!(r.revision.as_deref(), Some("v1.0"));
    let r = HubRef::parse("org/name@refs/pr/1").unwrap();
    assert_eq!(r.revision.as_deref(), Some("refs/pr/1"));
    let r = HubRef::parse("hf://org/name@dev/sub/m.gguf").unwrap();
    assert_eq!(
        (r.repo.as_str(), r.revision.as_deref(), r.path.as_deref()),
        ("org/name", Some("dev"), Some("sub/m.gguf"))
    );
    let r = HubRef::parse("hf://org/name/m.gguf").unwrap();
    assert_eq!((r.revision, r.path.as_deref()), (None, Some("m.gguf")));
    for bad in [
        "name",
        "./org/name",
        "org/name/file",
        "/abs/path",
        "org/../x",
        "hf://org/name/../../etc/passwd",
        "org/na me",
        "org/name@",
        "C:\\models\\x",
    ] {
        assert_eq!(HubRef::parse(bad), None, "{bad}");
    }
}

#[test]
fn settings_follow_huggingface_hubs_environment() {
    let home = temp_dir("home");
    let vars = |pairs: &[(&str, String)]| {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        HubSettings::from_vars(move |k| m.get(k).cloned())
    };
    let h = home.display().to_string();
    let s = vars(&[("HOME", h.clone())]);
    assert_eq!(s.endpoint, "https://huggingface.co");
    assert_eq!(s.cache_dir, home.join(".cache/huggingface/hub"));
    assert_eq!(s.token, None);
    assert!(!s.offline);
    let s = vars(&[("HOME", h.clone()), ("XDG_CACHE_HOME", "/x".into())]);
    assert_eq!(s.cache_dir, Path::new("/x/huggingface/hub"));
    // The token file under HF_HOME; HF_TOKEN wins over it.
    write(&home.join("hfh/token"), b"hf_from_file\n");
    let s = vars(&[
        ("HOME", h.clone()),
        ("HF_HOME", "~/hfh".into()),
        ("HF_ENDPOINT", "http://mirror.local/".into()),
        ("HF_HUB_OFFLINE", "1".into()),
    ]);
    assert_eq!(s.cache_dir, home.join("hfh/hub"));
    assert_eq!(s.token.as_deref(), Some("hf_from_file"));
    assert_eq!(s.endpoint, "http://mirror.local");
    assert!(s.offline);
    let s = vars(&[
        ("HOME", h.clone()),
        ("HF_HOME", "~/hfh".into()),
        ("HF_TOKEN", "hf_env".into()),
        ("HF_HUB_CACHE", "/c".into()),
        ("HF_HUB_OFFLINE", "0".into()),
    ]);
    assert_eq!(s.token.as_deref(), Some("hf_env"));
    assert_eq!(s.cache_dir, Path::new("/c"));
    assert!(!s.offline);
}

#[test]
fn model_arguments_resolve_to_what_a_command_opens() {
    let server = StandIn::start(&hub_folder());
    let cache = temp_dir("args");
    let s = settings(&server, &cache);
    // Existing paths and non-references are returned untouched, with no request.
    let here = temp_dir("local");
    assert_eq!(resolve_model_arg(&here, &s, &|_| {}).unwrap(), here);
    let missing = Path::new("no/such/dir/here");
    assert_eq!(resolve_model_arg(missing, &s, &|_| {}).unwrap(), missing);
    assert!(server.log().is_empty());
    // One .gguf and no config.json: that file, and only it, is pulled.
    let p = resolve_model_arg(Path::new("test-org/one-gguf"), &s, &|_| {}).unwrap();
    assert!(p.ends_with("model-f16.gguf"), "{}", p.display());
    assert_eq!(
        std::fs::read(&p).unwrap(),
        server.file("test-org/one-gguf", "model-f16.gguf").bytes
    );
    assert!(!p.parent().unwrap().join("README.md").exists());
    // Several: an error naming them; one named with hf://: that one.
    let err = resolve_model_arg(Path::new("test-org/ggufs"), &s, &|_| {}).unwrap_err();
    assert!(
        matches!(&err, HubError::AmbiguousGguf { files, .. } if files.len() == 2),
        "{err}"
    );
    assert!(err.to_string().contains("hf://test-org/ggufs/"), "{err}");
    let p = resolve_model_arg(Path::new("hf://test-org/ggufs/m.Q8_0.gguf"), &s, &|_| {}).unwrap();
    assert_eq!(
        std::fs::read(&p).unwrap(),
        server.file("test-org/ggufs", "m.Q8_0.gguf").bytes
    );
    // A checkpoint: the snapshot folder, without the duplicate pytorch weights.
    let p = resolve_model_arg(Path::new("test-org/both"), &s, &|_| {}).unwrap();
    assert!(p.join("model.safetensors").is_file() && p.join("config.json").is_file());
    assert!(!p.join("pytorch_model.bin").exists());
    assert!(server.file_requests("pytorch_model.bin").is_empty());
}

#[test]
fn interrupted_pull_resumes_next_time() {
    let server = StandIn::start(&hub_folder());
    server.faults.lock().unwrap().slow_bps = Some(100 * 1024);
    let cache = temp_dir("sigint");
    let home = temp_dir("sigint-home");
    let mut child = qforge(&server, &cache, &home)
        .args(["pull", "test-org/small", "--include", "*.safetensors"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sha = server
        .file("test-org/small", "model.safetensors")
        .sha256
        .clone();
    let repo = RepoCache::new(&cache, "test-org/small");
    let incomplete = repo.incomplete_path(&sha);
    let t = Instant::now();
    while std::fs::metadata(&incomplete).map_or(0, |m| m.len()) < 64 * 1024 {
        assert!(t.elapsed() < Duration::from_secs(20), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Ctrl-C.
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert!(!status.success());
    let kept = std::fs::metadata(&incomplete).unwrap().len();
    assert!(kept > 0 && kept < 300 * 1024, "{kept}");
    assert!(!repo.blob_path(&sha).exists());

    server.faults.lock().unwrap().slow_bps = None;
    server.clear_log();
    let out = qforge(&server, &cache, &home)
        .args(["pull", "test-org/small"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("resuming at byte {kept}")),
        "{stderr}"
    );
    let reqs: Vec<_> = server
        .file_requests("model.safetensors")
        .into_iter()
        .filter(|l| l.cdn)
        .collect();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].range.as_deref(), Some(&*format!("bytes={kept}-")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let snapshot = PathBuf::from(stdout.lines().last().unwrap());
    assert_snapshot_matches(&server, "test-org/small", &snapshot);
}

#[test]
fn pulled_repo_converts_to_the_same_bytes_as_its_folder() {
    let src = golden("tiny-llama");
    if !src.join("config.json").exists() {
        panic!("{}: the shared golden checkpoint is missing", src.display());
    }
    let root = temp_dir("convert-served");
    let folder = root.join("test-org/tiny-llama");
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        write(
            &folder.join(e.file_name()),
            &std::fs::read(e.path()).unwrap(),
        );
    }
    let server = StandIn::start(&root);
    let cache = temp_dir("convert-cache");
    let home = temp_dir("convert-home");
    let folder_out = temp_dir("convert-folder-out");
    let o = qforge(&server, &cache, &home)
        .arg("convert")
        .arg(&folder)
        .args(["--outtype", "f16", "-o"])
        .arg(&folder_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(server.log().is_empty());
    let from_folder: Vec<PathBuf> = std::fs::read_dir(&folder_out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(from_folder.len(), 1, "{from_folder:?}");
    let from_folder = &from_folder[0];
    let out_dir = temp_dir("convert-out");
    // The same repository by id, output defaulting to the current folder (not the cache).
    let o = qforge(&server, &cache, &home)
        .current_dir(&out_dir)
        .args(["convert", "test-org/tiny-llama", "--outtype", "f16"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let written: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    let a = std::fs::read(from_folder).unwrap();
    let b = std::fs::read(&written[0]).unwrap();
    assert!(
        a == b,
        "converted bytes differ ({} vs {} bytes)",
        a.len(),
        b.len()
    );
    // The name the converter gives the folder's output, too (not one from a commit hash).
    assert_eq!(written[0].file_name(), from_folder.file_name());
    // And offline, from the cache alone: the same bytes again.
    let again = out_dir.join("offline.gguf");
    server.clear_log();
    let o = qforge(&server, &cache, &home)
        .env("HF_HUB_OFFLINE", "1")
        .args(["convert", "test-org/tiny-llama", "--outtype", "f16", "-o"])
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(server.log().is_empty());
    assert!(std::fs::read(&again).unwrap() == a);
    assert!(cache
        .join("models--test-org--tiny-llama/refs/main")
        .is_file());
}

// ---------------------------------------------------------------------------------------------
// Interop with Python's huggingface_hub (skipped when it is not installed).

fn python_hub() -> Option<String> {
    let ok = Command::new("python3")
        .args(["-c", "import huggingface_hub"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: python3 -c 'import huggingface_hub' failed (pip install huggingface_hub to run this test)");
        return None;
    }
    Some("python3".to_string())
}

fn python(py: &str, server: &StandIn, cache: &Path, home: &Path, script: &str) -> String {
    let out = Command::new(py)
        .args(["-c", script])
        .env("HF_ENDPOINT", server.endpoint())
        .env("HF_HUB_CACHE", cache)
        .env("HF_HOME", home)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("HF_HUB_DISABLE_XET", "1")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn huggingface_hub_and_qforge_read_each_others_cache() {
    let Some(py) = python_hub() else { return };
    let server = StandIn::start(&hub_folder());
    let home = temp_dir("py-home");

    // 1. qforge fills the cache; huggingface_hub reads it with local_files_only=True.
    let cache = temp_dir("py-qforge-cache");
    let r = pull_all("test-org/small", &settings(&server, &cache)).unwrap();
    server.clear_log();
    let script = r#"
import os, hashlib
from huggingface_hub import snapshot_download, hf_hub_download, scan_cache_dir
p = snapshot_download("test-org/small", local_files_only=True)
print("SNAPSHOT", p)
for rel in ["config.json", "model.safetensors", "nested/dir/notes.txt"]:
    q = hf_hub_download("test-org/small", rel, local_files_only=True)
    print("FILE", rel, hashlib.sha256(open(q, "rb").read()).hexdigest())
info = scan_cache_dir()
assert not info.warnings, info.warnings
for repo in info.repos:
    for rev in repo.revisions:
        print("REV", repo.repo_id, rev.commit_hash, sorted(rev.refs), rev.nb_files)
"#;
    let out = python(&py, &server, &cache, &home, script);
    assert!(server.log().is_empty(), "local_files_only asked the server");
    let commit = server.commit("test-org/small");
    assert!(
        out.contains(&format!("SNAPSHOT {}", r.snapshot.display())),
        "{out}"
    );
    for f in &server.repos["test-org/small"].files {
        assert!(
            out.contains(&format!("FILE {} {}", f.path, f.sha256)),
            "{out}"
        );
    }
    assert!(
        out.contains(&format!("REV test-org/small {commit} ['main'] 3")),
        "{out}"
    );

    // 2. huggingface_hub fills a cache from the stand-in; qforge reads it offline, and an
    //    online pull finds every blob there (same names) and downloads nothing.
    let cache2 = temp_dir("py-hf-cache");
    let out = python(
        &py,
        &server,
        &cache2,
        &home,
        "from huggingface_hub import snapshot_download\nprint(snapshot_download('test-org/small'))",
    );
    assert!(out.trim().ends_with(&commit), "{out}");
    let mut s = settings(&server, &cache2);
    s.offline = true;
    let r = pull_all("test-org/small", &s).unwrap();
    assert!(r.from_cache_only);
    assert_eq!(r.files.len(), 3);
    assert_snapshot_matches(&server, "test-org/small", &r.snapshot);
    s.offline = false;
    server.clear_log();
    let r = pull_all("test-org/small", &s).unwrap();
    assert_eq!((r.downloaded_bytes, r.cached_files), (0, 3));
    assert!(server.file_requests("").is_empty(), "{:?}", server.log());
}

#[test]
fn busy_hub_is_retried_then_reported() {
    let server = StandIn::start(&hub_folder());
    let cache = temp_dir("busy");
    let s = settings(&server, &cache);
    server.faults.lock().unwrap().unavailable = 2;
    let r = pull_all("test-org/small", &s).unwrap();
    assert_snapshot_matches(&server, "test-org/small", &r.snapshot);
    let revision_calls = server
        .log()
        .iter()
        .filter(|l| l.target.contains("/revision/"))
        .count();
    assert_eq!(revision_calls, 3, "two 503s, then the answer");
    // Busy past the retry budget: an HTTP error naming the request.
    server.faults.lock().unwrap().unavailable = 100;
    let err = pull_all("test-org/one-gguf", &s).unwrap_err();
    assert!(matches!(err, HubError::Http { status: 503, .. }), "{err}");
    assert!(
        err.to_string()
            .contains("/api/models/test-org/one-gguf/revision/main"),
        "{err}"
    );
}

#[test]
fn cli_errors_are_one_line_and_pull_prints_the_snapshot() {
    let server = StandIn::start(&hub_folder());
    server.set_access("test-org/small", Access::Private);
    let cache = temp_dir("cli");
    let home = temp_dir("cli-home");
    let o = qforge(&server, &cache, &home)
        .args(["pull", "test-org/small"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("qforge: error: test-org/small: repository not found"),
        "{err}"
    );
    assert!(last.contains("HF_TOKEN"), "{err}");
    // The token file under HF_HOME is read, as huggingface_hub reads it.
    write(&home.join("token"), format!("{GOOD_TOKEN}\n").as_bytes());
    let o = qforge(&server, &cache, &home)
        .args(["pull", "test-org/small", "--jobs", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let snapshot = PathBuf::from(out.lines().last().unwrap());
    assert_eq!(
        snapshot,
        cache
            .join("models--test-org--small/snapshots")
            .join(server.commit("test-org/small"))
    );
    assert!(out.contains("3 file(s), 3 downloaded"), "{out}");
    // A missing local path that reads like a repo id: both tries are named.
    let o = qforge(&server, &cache, &home)
        .args(["convert", "models/llama", "--outtype", "f16"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "models/llama: no such local path; tried the Hub: models/llama: repository not found"
        ),
        "{err}"
    );
    // A file path is not a repository for `pull`.
    let o = qforge(&server, &cache, &home)
        .args(["pull", "hf://test-org/small/config.json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--include"));
}

#[test]
fn quantize_takes_a_gguf_from_the_hub() {
    let root = temp_dir("gguf-served");
    let model = root.join("test-org/tiny-gguf/tiny.f16.gguf");
    std::fs::create_dir_all(model.parent().unwrap()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .arg("synth")
        .arg(&model)
        .args([
            "--layers",
            "1",
            "--embd",
            "64",
            "--ff",
            "128",
            "--heads",
            "2",
            "--kv-heads",
            "1",
        ])
        .args(["--vocab", "256"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let server = StandIn::start(&root);
    let cache = temp_dir("gguf-cache");
    let home = temp_dir("gguf-home");
    let local_out = temp_dir("gguf-local").join("local.Q8_0.gguf");
    let o = qforge(&server, &cache, &home)
        .arg("quantize")
        .arg(&model)
        .arg(&local_out)
        .arg("Q8_0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The repository holds one .gguf and no config.json: that file is the model. The output
    // goes to the current folder, not into the cache.
    let cwd = temp_dir("gguf-cwd");
    let o = qforge(&server, &cache, &home)
        .current_dir(&cwd)
        .args(["quantize", "test-org/tiny-gguf", "Q8_0"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hub_out = cwd.join("ggml-model-Q8_0.gguf");
    assert!(std::fs::read(&hub_out).unwrap() == std::fs::read(&local_out).unwrap());
    let snapshot = cache
        .join("models--test-org--tiny-gguf/snapshots")
        .join(server.commit("test-org/tiny-gguf"));
    assert_eq!(std::fs::read_dir(&snapshot).unwrap().count(), 1);
}

#[test]
fn lora_commands_take_base_and_adapter_from_the_hub() {
    let base = golden("tiny-llama");
    let adapter = golden("lora/adapter");
    let root = temp_dir("lora-served");
    for (src, repo) in [
        (&base, "test-org/tiny-llama"),
        (&adapter, "test-org/adapter"),
    ] {
        for e in std::fs::read_dir(src).unwrap().flatten() {
            write(
                &root.join(repo).join(e.file_name()),
                &std::fs::read(e.path()).unwrap(),
            );
        }
    }
    let server = StandIn::start(&root);
    let cache = temp_dir("lora-cache");
    let home = temp_dir("lora-home");
    let out = temp_dir("lora-out");
    let run = |args: Vec<std::ffi::OsString>, cwd: &Path| {
        let o = qforge(&server, &cache, &home)
            .current_dir(cwd)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    // lora-to-gguf: local folders vs the same repos by id (output in the current folder).
    let local = out.join("local-adapter.gguf");
    run(
        vec![
            "lora-to-gguf".into(),
            root.join("test-org/adapter").into(),
            "--base".into(),
            root.join("test-org/tiny-llama").into(),
            "--outtype".into(),
            "f32".into(),
            "-o".into(),
            local.clone().into(),
        ],
        &out,
    );
    let cwd = temp_dir("lora-cwd");
    run(
        vec![
            "lora-to-gguf".into(),
            "test-org/adapter".into(),
            "--base".into(),
            "hf://test-org/tiny-llama".into(),
            "--outtype".into(),
            "f32".into(),
        ],
        &cwd,
    );
    let from_hub = std::fs::read(cwd.join("ggml-adapter-model.gguf")).unwrap();
    assert!(
        from_hub == std::fs::read(&local).unwrap(),
        "adapter GGUFs differ"
    );
    // convert --lora with a scaled adapter from the Hub equals the local one-pass merge.
    let local = out.join("local-merged.gguf");
    run(
        vec![
            "convert".into(),
            root.join("test-org/tiny-llama").into(),
            "--lora".into(),
            format!("{}:0.5", root.join("test-org/adapter").display()).into(),
            "--outtype".into(),
            "f16".into(),
            "--device".into(),
            "cpu".into(),
            "-o".into(),
            local.clone().into(),
        ],
        &out,
    );
    let hub = out.join("hub-merged.gguf");
    run(
        vec![
            "convert".into(),
            "test-org/tiny-llama".into(),
            "--lora".into(),
            "hf://test-org/adapter:0.5".into(),
            "--outtype".into(),
            "f16".into(),
            "--device".into(),
            "cpu".into(),
            "-o".into(),
            hub.clone().into(),
        ],
        &out,
    );
    assert!(
        std::fs::read(&hub).unwrap() == std::fs::read(&local).unwrap(),
        "merged GGUFs differ"
    );
}
