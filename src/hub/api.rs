//! The Hugging Face Hub's HTTP API as huggingface_hub calls it, and the environment settings it
//! reads (`HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_HUB_OFFLINE`, …).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::HubError;

/// Where the Hub is, where its cache lives and how to talk to it: what huggingface_hub reads from
/// the environment, plus the retry policy of [`super::pull`].
#[derive(Clone, Debug)]
pub struct HubSettings {
    /// `HF_ENDPOINT` without a trailing slash (default `https://huggingface.co`).
    pub endpoint: String,
    /// The hub cache: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`.
    pub cache_dir: PathBuf,
    /// `HF_TOKEN`, else the token file (`HF_TOKEN_PATH`, default `$HF_HOME/token`).
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE` set to 1/true/yes/on: nothing is requested, the cache alone answers.
    pub offline: bool,
    /// How many times a broken transfer or a 5xx/429 answer is retried before giving up.
    pub retries: u32,
    /// The first wait before a retry; each further retry waits twice as long (capped at 30 s).
    pub backoff: Duration,
    /// Longest silence tolerated while connecting or reading before the attempt counts as broken.
    pub read_timeout: Duration,
}

impl HubSettings {
    /// The settings the process environment gives, as huggingface_hub would read them.
    pub fn from_env() -> HubSettings {
        HubSettings::from_vars(|k| std::env::var(k).ok())
    }

    /// The settings a set of environment variables gives (`var` answers one name), so callers
    /// and tests need not touch the process environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> HubSettings {
        let nonempty = |k: &str| var(k).filter(|v| !v.is_empty());
        let home_dir = nonempty("HOME").map(PathBuf::from).unwrap_or_default();
        let hf_home = nonempty("HF_HOME")
            .map(expand_home(&home_dir))
            .unwrap_or_else(|| {
                nonempty("XDG_CACHE_HOME")
                    .map(expand_home(&home_dir))
                    .unwrap_or_else(|| home_dir.join(".cache"))
                    .join("huggingface")
            });
        let cache_dir = nonempty("HF_HUB_CACHE")
            .or_else(|| nonempty("HUGGINGFACE_HUB_CACHE"))
            .map(expand_home(&home_dir))
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = nonempty("HF_TOKEN")
            .or_else(|| nonempty("HUGGING_FACE_HUB_TOKEN"))
            .map(|t| t.trim().to_string())
            .or_else(|| {
                let path = nonempty("HF_TOKEN_PATH")
                    .map(expand_home(&home_dir))
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_string())
            })
            .filter(|t| !t.is_empty());
        let offline = nonempty("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        let endpoint = nonempty("HF_ENDPOINT")
            .unwrap_or_else(|| "https://huggingface.co".to_string())
            .trim_end_matches('/')
            .to_string();
        HubSettings {
            endpoint,
            cache_dir,
            token,
            offline,
            retries: 5,
            backoff: Duration::from_millis(500),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// `~/x` → `$HOME/x`, as Python's `os.path.expanduser` does for these variables.
fn expand_home(home: &Path) -> impl Fn(String) -> PathBuf + '_ {
    move |v| match v.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if v == "~" => home.to_path_buf(),
        None => PathBuf::from(v),
    }
}

/// One file of a repository at a commit, as the tree listing gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFile {
    /// Path inside the repository, `/`-separated.
    pub path: String,
    /// Size of the file's content in bytes.
    pub size: u64,
    /// Git blob sha1 (hex) of the file as committed (of the LFS pointer for LFS files).
    pub blob_id: String,
    /// sha256 (hex) of the content, for files stored with LFS.
    pub lfs_sha256: Option<String>,
}

impl RepoFile {
    /// The name of this file's blob in the cache, as huggingface_hub names it: the LFS sha256
    /// for LFS files, the git blob sha1 otherwise (the ETag the Hub answers with).
    pub fn etag(&self) -> &str {
        self.lfs_sha256.as_deref().unwrap_or(&self.blob_id)
    }
}

/// A revision resolved to its commit, with the files of that commit.
#[derive(Clone, Debug)]
pub struct RepoListing {
    /// `org/name`.
    pub repo: String,
    /// The revision asked for (branch, tag or commit).
    pub revision: String,
    /// The 40-hex commit the revision names.
    pub commit: String,
    /// Every file of the commit, in the order the Hub lists them.
    pub files: Vec<RepoFile>,
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: Option<String>,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: String,
    lfs: Option<TreeLfs>,
}

#[derive(Deserialize)]
struct TreeLfs {
    oid: String,
    size: u64,
}

/// An HTTP client for one Hub endpoint, with the token (if any) attached to Hub requests.
pub struct HubClient {
    agent: ureq::Agent,
    settings: HubSettings,
}

/// What went wrong with one request, before it is turned into a [`HubError`]: an answer with a
/// status the caller may interpret, or a transport failure worth retrying.
pub(crate) enum Failure {
    /// The server answered with this status.
    Status {
        status: u16,
        error_code: Option<String>,
        message: Option<String>,
    },
    /// No usable answer: connection refused or cut, timeout, protocol error.
    Transport(String),
}

impl HubClient {
    /// A client for `settings.endpoint`.
    pub fn new(settings: &HubSettings) -> HubClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The Hub's LFS answers redirect to a CDN host with presigned URLs: the token must
            // not travel there. It does follow a renamed repository's redirect on the Hub itself.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .max_redirects(10)
            .timeout_connect(Some(settings.read_timeout))
            .timeout_recv_response(Some(settings.read_timeout))
            .timeout_per_read(Some(settings.read_timeout))
            .user_agent(concat!("qforge/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        HubClient {
            agent,
            settings: settings.clone(),
        }
    }

    /// The settings this client was made from.
    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// `GET url` with the token and an optional `Range: bytes=N-`.
    pub(crate) fn get(
        &self,
        url: &str,
        range_from: Option<u64>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut req = self.agent.get(url);
        if let Some(t) = &self.settings.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(n) = range_from {
            req = req.header("Range", format!("bytes={n}-"));
        }
        let resp = req.call().map_err(|e| Failure::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            return Err(Failure::Status {
                status,
                error_code: header("X-Error-Code"),
                message: header("X-Error-Message"),
            });
        }
        Ok(resp)
    }

    /// `GET url` → JSON, retried on transport failures and 5xx/429 like a download.
    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &Target<'_>,
    ) -> Result<(T, Option<String>), HubError> {
        let mut attempt = 0;
        loop {
            let failure = match self.get(url, None) {
                Ok(resp) => {
                    let next = resp
                        .headers()
                        .get("Link")
                        .and_then(|v| v.to_str().ok())
                        .and_then(next_link);
                    match resp.into_body().read_to_string() {
                        Ok(text) => {
                            let v =
                                serde_json::from_str(&text).map_err(|e| HubError::BadResponse {
                                    url: url.to_string(),
                                    what: e.to_string(),
                                })?;
                            return Ok((v, next));
                        }
                        Err(e) => Failure::Transport(e.to_string()),
                    }
                }
                Err(f) => f,
            };
            match failure {
                Failure::Status { status, .. }
                    if status != 429 && status < 500 || attempt >= self.settings.retries =>
                {
                    return Err(self.status_error(failure, what, url))
                }
                Failure::Transport(e) if attempt >= self.settings.retries => {
                    return Err(HubError::Transport {
                        url: url.to_string(),
                        attempts: attempt + 1,
                        error: e,
                    })
                }
                _ => {}
            }
            std::thread::sleep(backoff_wait(&self.settings, attempt));
            attempt += 1;
        }
    }

    /// Resolve `revision` of `repo` to its commit and list the commit's files
    /// (`/api/models/{repo}/revision/{rev}`, then `/api/models/{repo}/tree/{commit}?recursive=true`
    /// following `Link: <…>; rel="next"` pages).
    pub fn list(&self, repo: &str, revision: &str) -> Result<RepoListing, HubError> {
        let target = Target {
            repo,
            revision: Some(revision),
            path: None,
        };
        let base = &self.settings.endpoint;
        let rev_url = format!(
            "{base}/api/models/{repo}/revision/{}",
            percent_encode(revision)
        );
        let (info, _): (RevisionInfo, _) = self.get_json(&rev_url, &target)?;
        let commit =
            info.sha
                .filter(|s| is_commit_hash(s))
                .ok_or_else(|| HubError::BadResponse {
                    url: rev_url.clone(),
                    what: "no 40-hex `sha` in the revision info".to_string(),
                })?;
        let mut files = Vec::new();
        let mut next = Some(format!(
            "{base}/api/models/{repo}/tree/{commit}?recursive=true&expand=false"
        ));
        while let Some(url) = next.take() {
            let (entries, link): (Vec<TreeEntry>, _) = self.get_json(&url, &target)?;
            for e in entries {
                if e.kind != "file" {
                    continue;
                }
                check_repo_path(&e.path).map_err(|what| HubError::BadResponse {
                    url: url.clone(),
                    what,
                })?;
                let (size, lfs_sha256) = match e.lfs {
                    Some(l) => (l.size, Some(l.oid)),
                    None => (e.size, None),
                };
                files.push(RepoFile {
                    path: e.path,
                    size,
                    blob_id: e.oid,
                    lfs_sha256,
                });
            }
            next = link;
        }
        Ok(RepoListing {
            repo: repo.to_string(),
            revision: revision.to_string(),
            commit,
            files,
        })
    }

    /// `{endpoint}/{repo}/resolve/{commit}/{path}`: the URL a file's bytes come from.
    pub fn resolve_url(&self, repo: &str, commit: &str, path: &str) -> String {
        let encoded: Vec<String> = path.split('/').map(percent_encode).collect();
        format!(
            "{}/{repo}/resolve/{commit}/{}",
            self.settings.endpoint,
            encoded.join("/")
        )
    }

    /// The error a person can act on for a failed request about `what`.
    pub(crate) fn status_error(&self, failure: Failure, what: &Target<'_>, url: &str) -> HubError {
        let (status, code, message) = match failure {
            Failure::Transport(e) => {
                return HubError::Transport {
                    url: url.to_string(),
                    attempts: 1,
                    error: e,
                }
            }
            Failure::Status {
                status,
                error_code,
                message,
            } => (status, error_code, message),
        };
        let repo = what.repo.to_string();
        let code = code.as_deref().unwrap_or("");
        let token_sent = self.settings.token.is_some();
        if code == "GatedRepo" {
            return HubError::Gated {
                repo,
                endpoint: self.settings.endpoint.clone(),
                token_sent,
            };
        }
        match (status, code) {
            (_, "RevisionNotFound") => HubError::RevisionNotFound {
                repo,
                revision: what.revision.unwrap_or("main").to_string(),
            },
            (_, "EntryNotFound") => HubError::FileNotFound {
                repo,
                revision: what.revision.unwrap_or("main").to_string(),
                path: what.path.unwrap_or("").to_string(),
            },
            (401, _) | (403, _) if token_sent && code != "RepoNotFound" => {
                HubError::TokenRejected { repo, status }
            }
            (401, _) | (403, _) | (404, "RepoNotFound") => {
                HubError::RepoNotFound { repo, token_sent }
            }
            (404, _) => match what.path {
                Some(p) => HubError::FileNotFound {
                    repo,
                    revision: what.revision.unwrap_or("main").to_string(),
                    path: p.to_string(),
                },
                None => HubError::RepoNotFound { repo, token_sent },
            },
            _ => HubError::Http {
                url: url.to_string(),
                status,
                message: message.unwrap_or_default(),
            },
        }
    }
}

/// What a request was about, so its failure can say which of repo, revision or file is missing.
pub(crate) struct Target<'a> {
    pub repo: &'a str,
    pub revision: Option<&'a str>,
    pub path: Option<&'a str>,
}

/// The wait before retry number `attempt + 1`: `backoff · 2^attempt`, at most 30 s.
pub(crate) fn backoff_wait(settings: &HubSettings, attempt: u32) -> Duration {
    let w = settings.backoff.saturating_mul(1u32 << attempt.min(16));
    w.min(Duration::from_secs(30))
}

/// The `rel="next"` URL of a `Link` header (the Hub paginates tree listings this way).
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

/// Whether `s` is a full commit id (40 lowercase hex digits), as huggingface_hub's
/// `REGEX_COMMIT_HASH`.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A repository path must stay inside the snapshot: no absolute paths, `..`, empty or `.`
/// components (a hostile listing could otherwise write anywhere).
pub(crate) fn check_repo_path(path: &str) -> Result<(), String> {
    if path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!("unsafe file path {path:?} in the tree listing"));
    }
    Ok(())
}

/// Percent-encode everything but RFC 3986's unreserved characters (Python's
/// `quote(s, safe="")`).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
