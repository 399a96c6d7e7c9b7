//! The REST API: JSON over HTTP, every request authenticated with a bearer token.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tiny_http::{Header, Method, Request, Response};

use super::root_paths::check_args;
use super::worker::Shared;
use crate::cli::job_args::{check, SERVE_COMMANDS};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// How much of a refused body is read (so the client sees the answer, not a reset).
const DRAIN_LIMIT: u64 = 16 << 20;

/// The settings a handler needs beside the shared state.
pub struct Api {
    /// Jobs, workers, root.
    pub shared: Arc<Shared>,
    /// SHA-256 of the bearer token: compared in constant time, whatever the lengths.
    pub token_digest: [u8; 32],
    /// Most jobs waiting at once (429 beyond).
    pub max_queued: usize,
}

struct Reply {
    status: u16,
    body: Value,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply { status, body }
}

fn error(status: u16, msg: impl Into<String>) -> Reply {
    reply(status, json!({ "error": msg.into() }))
}

/// Equal digests, examined in full whatever differs.
fn digest_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Api {
    fn authorized(&self, rq: &Request) -> bool {
        let Some(h) = rq.headers().iter().find(|h| h.field.equiv("Authorization")) else {
            return false;
        };
        let v = h.value.as_str().trim();
        let Some(token) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        else {
            return false;
        };
        let d: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        digest_eq(&d, &self.token_digest)
    }

    /// Answer one request.
    pub fn handle(&self, mut rq: Request) {
        let r = self.route(&mut rq);
        // Whatever of the body was not read: read (up to a limit) so the answer arrives.
        let _ = std::io::copy(&mut rq.as_reader().take(DRAIN_LIMIT), &mut std::io::sink());
        let (ctype, body) = match r.body {
            Value::String(s) if r.status == 200 && rq.url().ends_with("/log") => {
                ("text/plain; charset=utf-8", s)
            }
            v => ("application/json", v.to_string()),
        };
        let mut resp = Response::from_string(body)
            .with_status_code(r.status)
            .with_header(Header::from_bytes("Content-Type", ctype).expect("valid header"));
        if r.status == 401 {
            resp.add_header(
                Header::from_bytes("WWW-Authenticate", "Bearer").expect("valid header"),
            );
        }
        let _ = rq.respond(resp);
    }

    fn route(&self, rq: &mut Request) -> Reply {
        if !self.authorized(rq) {
            return error(401, "missing or wrong bearer token");
        }
        let path = rq.url().split('?').next().unwrap_or("").to_string();
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let method = rq.method().clone();
        match (parts.as_slice(), &method) {
            (["", "v1", "jobs"], Method::Post) => self.submit(rq),
            (["", "v1", "jobs"], Method::Get) => match self.shared.store.list() {
                Ok(jobs) => reply(
                    200,
                    json!({ "jobs": jobs.iter().map(|j| j.to_json()).collect::<Vec<_>>() }),
                ),
                Err(e) => error(500, format!("{e:#}")),
            },
            (["", "v1", "jobs", id], m) => {
                let Ok(id) = id.parse::<i64>() else {
                    return error(404, format!("no job {id}"));
                };
                match m {
                    Method::Get => self.show(id),
                    Method::Delete => self.cancel(id),
                    _ => error(405, "use GET or DELETE on a job"),
                }
            }
            (["", "v1", "jobs", id, "log"], Method::Get) => {
                let Ok(id) = id.parse::<i64>() else {
                    return error(404, format!("no job {id}"));
                };
                match self.shared.store.get(id) {
                    Ok(Some(_)) => reply(
                        200,
                        Value::String(
                            std::fs::read(self.shared.log_path(id))
                                .map(|b| String::from_utf8_lossy(&b).into_owned())
                                .unwrap_or_default(),
                        ),
                    ),
                    Ok(None) => error(404, format!("no job {id}")),
                    Err(e) => error(500, format!("{e:#}")),
                }
            }
            (["", "v1", "jobs"], _) => error(405, "use GET or POST on /v1/jobs"),
            _ => error(404, format!("no such endpoint: {path}")),
        }
    }

    fn show(&self, id: i64) -> Reply {
        match self.shared.store.get(id) {
            Ok(Some(j)) => reply(200, j.to_json()),
            Ok(None) => error(404, format!("no job {id}")),
            Err(e) => error(500, format!("{e:#}")),
        }
    }

    fn submit(&self, rq: &mut Request) -> Reply {
        if rq.body_length().is_some_and(|n| n > MAX_BODY) {
            return error(413, format!("request body over {MAX_BODY} bytes"));
        }
        let mut body = Vec::new();
        if let Err(e) = rq
            .as_reader()
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut body)
        {
            return error(400, format!("reading the body: {e}"));
        }
        if body.len() > MAX_BODY {
            return error(413, format!("request body over {MAX_BODY} bytes"));
        }
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(400, format!("bad JSON: {e}")),
        };
        let Some(args) = v.get("args").and_then(Value::as_array) else {
            return error(400, r#"expected {"args": ["COMMAND", ...]}"#);
        };
        let mut words = Vec::with_capacity(args.len());
        for a in args {
            match a.as_str() {
                Some(s) if !s.contains('\0') => words.push(s.to_string()),
                _ => return error(400, "args must be strings"),
            }
        }
        let Some(command) = words.first() else {
            return error(400, "args is empty: give a command");
        };
        if !SERVE_COMMANDS.contains(&command.as_str()) {
            return error(
                400,
                format!(
                    "command '{command}' is not allowed (allowed: {})",
                    SERVE_COMMANDS.join(", ")
                ),
            );
        }
        if let Err(msg) = check(&words) {
            return error(400, msg);
        }
        if let Err(refusal) = check_args(&self.shared.root, &words) {
            return error(403, refusal.to_string());
        }
        match self.shared.store.count_queued() {
            Ok(n) if n >= self.max_queued => {
                return error(
                    429,
                    format!(
                        "{n} jobs are queued already (the cap is {})",
                        self.max_queued
                    ),
                )
            }
            Ok(_) => {}
            Err(e) => return error(500, format!("{e:#}")),
        }
        match self.shared.store.insert(&words) {
            Ok(job) => {
                self.shared.notify();
                reply(201, job.to_json())
            }
            Err(e) => error(500, format!("{e:#}")),
        }
    }

    fn cancel(&self, id: i64) -> Reply {
        let store = &self.shared.store;
        let job = match store.get(id) {
            Ok(Some(j)) => j,
            Ok(None) => return error(404, format!("no job {id}")),
            Err(e) => return error(500, format!("{e:#}")),
        };
        match job.state.as_str() {
            "queued" => {
                if let Ok(true) = store.cancel_queued(id) {
                    return self.show(id);
                }
                // It started in the meantime: cancel it running.
            }
            "running" => {}
            s => return error(409, format!("job {id} has finished ({s})")),
        }
        self.shared.cancels.lock().unwrap().insert(id);
        // Answer once the worker has stopped it (it does within the grace period).
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            match store.get(id) {
                Ok(Some(j)) if j.state != "running" && j.state != "queued" => {
                    return reply(200, j.to_json())
                }
                _ => std::thread::sleep(Duration::from_millis(25)),
            }
        }
        self.show(id)
    }
}
