//! A small client of Redwall's HTTP API, for commands that act on the
//! serving process (instances live there). It authenticates with a personal
//! access token taken from `REDWALL_TOKEN` only: a flag would show in `ps`
//! and in shell history.

use clap::Args;
use redwall_crypto::Secret;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, Url};
use serde_json::Value;
use std::net::IpAddr;
use std::path::PathBuf;

pub const TOKEN_ENV: &str = "REDWALL_TOKEN";

/// Where the server is and how to trust it.
#[derive(Args, Clone)]
pub struct Connection {
    /// The Redwall server's address.
    #[arg(
        long,
        global = true,
        env = "REDWALL_URL",
        default_value = "https://127.0.0.1:8443"
    )]
    pub url: String,
    /// Trust this PEM certificate (e.g. `<data_dir>/tls/self-signed-cert.pem`).
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Do not verify the server's certificate (loopback addresses only).
    #[arg(long, global = true)]
    pub insecure_skip_verify: bool,
}

/// Why a command failed; decides the message and the exit status.
#[derive(Debug)]
pub enum Failure {
    /// The API refused: its own code and message (exit 2).
    Api { code: String, message: String },
    /// The command line or its input is wrong (exit 2).
    Usage(String),
    /// Anything else: unreachable server, unreadable file, bad answer (exit 1).
    Other(anyhow::Error),
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::Usage(message.into())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

pub type Outcome<T> = Result<T, Failure>;

pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(h) if h.eq_ignore_ascii_case("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

impl ApiClient {
    pub fn new(conn: &Connection) -> Outcome<ApiClient> {
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .map(Secret::new)
            .ok_or_else(|| {
                Failure::usage(format!(
                    "set {TOKEN_ENV} to a personal access token (POST /api/v1/me/tokens); \
                 it is never taken from the command line"
                ))
            })?;
        Self::with_token(conn, &token)
    }

    pub fn with_token(conn: &Connection, token: &Secret) -> Outcome<ApiClient> {
        let mut base = Url::parse(&conn.url)
            .map_err(|e| Failure::usage(format!("--url {}: {e}", conn.url)))?;
        if base.scheme() != "https" && base.scheme() != "http" {
            return Err(Failure::usage("--url must start with https:// or http://"));
        }
        if base.scheme() == "http" && !is_loopback(&base) {
            return Err(Failure::usage(
                "refusing to send the token over plain HTTP to a non-loopback address; use https://",
            ));
        }
        if conn.insecure_skip_verify && !is_loopback(&base) {
            return Err(Failure::usage(
                "--insecure-skip-verify is allowed for loopback addresses only; use --ca-file",
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("redwall-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(path) = &conn.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| Failure::Other(anyhow::anyhow!("reading {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Failure::usage(format!("{} holds no PEM certificate: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(Failure::usage(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if conn.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| Failure::Other(anyhow::anyhow!("building the HTTP client: {e}")))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| Failure::usage(format!("{TOKEN_ENV} is not a valid token")))?;
        auth.set_sensitive(true);
        Ok(ApiClient { http, base, auth })
    }

    /// `api/v1/<segments>`, each segment percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    pub fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
    }

    /// Sends and returns the JSON answer (`null` for an empty one), or the
    /// API's error.
    pub async fn call(&self, method: Method, url: Url, body: Option<&Value>) -> Outcome<Value> {
        let mut req = self.request(method, url);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = self.send(req).await?;
        let text = resp
            .text()
            .await
            .map_err(|e| Failure::Other(anyhow::anyhow!("reading the answer: {e}")))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| Failure::Other(anyhow::anyhow!("the server's answer is not JSON: {e}")))
    }

    /// Sends; a non-success status becomes [`Failure::Api`].
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Outcome<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            let cause = error_chain(&e);
            let hint = if cause.contains("certificate") {
                " (trust the server with --ca-file, e.g. <data_dir>/tls/self-signed-cert.pem)"
            } else {
                ""
            };
            Failure::Other(anyhow::anyhow!(
                "cannot reach Redwall at {}: {cause}{hint}",
                self.base
            ))
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("http_{}", status.as_u16()));
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| status.to_string());
        Err(Failure::Api { code, message })
    }
}

/// reqwest hides the cause (e.g. an unknown certificate) in its source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The exit status of an API command, its failure printed first: the API's
/// refusals and usage errors exit 2, anything else 1.
pub fn finish(outcome: Outcome<()>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(Failure::Api { code, message }) => {
            eprintln!("error: {message} ({code})");
            std::process::ExitCode::from(2)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            std::process::ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The raw JSON with `--json`, else what `human` prints.
pub fn print_json_or(json: bool, value: &Value, human: impl FnOnce(&Value)) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        human(value);
    }
}

/// The elements of a JSON list (none for anything else).
pub fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A JSON value as a table cell: `-` for null, strings without quotes.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints `rows` under `headers` in aligned columns (the last one unpadded).
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}
