//! A snapshot's flows as files made for review, and back, exactly.
//!
//! ```text
//! redwall-snapshot.json              format, node order, tab order, the
//!                                    snapshot it came from (id, signed
//!                                    statement), variable names, modules
//! credentials.sealed                 the credentials, sealed by the hub
//!                                    (base64; absent when there are none)
//! tabs/<label>-<id>/flow.json        {"tab": {...}, "nodes": [...], "code": {...}}
//! tabs/<label>-<id>/<name>-<id>.func.js        a function node's body
//!                  .../<name>-<id>.initialize.js, .finalize.js
//!                  .../<name>-<id>.template.html  a template node's text
//! subflows/<name>-<id>/flow.json     {"subflow": {...}, "nodes": [...], "code": {...}}
//! global/config.json                 {"nodes": [...], "code": {...}}: config
//!                                    nodes, and any node of no tab or subflow
//! ```
//!
//! Every node keeps every property except the code taken out into its own
//! file; `code` says which file holds which property of which node (node
//! id -> property -> file name in the same directory), so a renamed node or
//! tab keeps its files. A code file is the property's text with one line
//! break added at its end (taken off again when read), so reviewers see
//! plain lines and git no "no newline at end of file". Objects are written
//! with their keys sorted, so the same flows always give the same bytes.
//!
//! `order` in the manifest lists every node id in the flows' order:
//! reading restores it, so the flows' canonical hash is unchanged by a
//! round trip. Nodes a reviewer added (not in `order`) come after, in the
//! order of their files; ids that are gone are skipped.
//!
//! Names in paths are slugs (`[a-z0-9-]`, at most 40 characters) followed by
//! the node's id encoded (`[a-z0-9]` kept, any other byte as `_xx`, an
//! encoding longer than 64 characters as `_h` and a SHA-256 prefix), so
//! paths are safe on every file system and distinct for distinct ids.
//! Reading refuses absolute paths, `..`, empty or hidden components, names
//! outside that alphabet inside `tabs/`, `subflows/` and `global/`, more
//! than [`MAX_FILES`] files or [`MAX_TOTAL_BYTES`] in all; files elsewhere
//! (a README) are left alone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{MAX_FILES, MAX_TOTAL_BYTES};

/// The manifest's `format`.
pub const FORMAT: &str = "redwall-git-layout/v1";
/// The manifest's path.
pub const MANIFEST: &str = "redwall-snapshot.json";
/// The sealed credentials' path.
pub const CREDENTIALS: &str = "credentials.sealed";
const TABS: &str = "tabs";
const SUBFLOWS: &str = "subflows";
const GLOBAL: &str = "global";
const FLOW_FILE: &str = "flow.json";
const CONFIG_FILE: &str = "config.json";
/// The longest slug in a path.
const MAX_SLUG: usize = 40;
/// An encoded id longer than this is replaced by a digest.
const MAX_ENCODED_ID: usize = 64;
/// The longest path component read.
const MAX_NAME: usize = 255;
/// The longest path read (anywhere in the tree).
const MAX_PATH: usize = 4096;
/// The most a sealed credentials file may hold.
const MAX_CREDENTIALS: usize = 16 * 1024 * 1024;

/// What a layout holds beside the flows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayoutExtra {
    /// The snapshot the files were written from. Read back as the files
    /// claim it: not proof of anything.
    pub source: Option<Source>,
    /// The instance's environment variable names (never their values).
    pub env_names: Vec<String>,
    /// Module name -> exact version.
    pub modules: BTreeMap<String, String>,
    /// The credentials as sealed by the caller, in base64; written as
    /// `credentials.sealed`.
    pub credentials_sealed: Option<String>,
}

/// The snapshot a layout was written from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub snapshot_id: String,
    /// The canonical JSON statement the hub signed.
    pub statement: String,
    /// The Ed25519 signature of the statement (hex).
    pub signature: String,
    /// The hub key that signed it (base64).
    pub signing_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The flows cannot be written as files.
    #[error("the flows cannot be laid out as files: {0}")]
    Flows(String),
    /// A file of the tree is not what the layout expects.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("the tree holds more than {MAX_FILES} files")]
    TooManyFiles,
    #[error("the tree holds more than {} MiB", MAX_TOTAL_BYTES / (1024 * 1024))]
    TooLarge,
}

fn flows_error(message: impl Into<String>) -> LayoutError {
    LayoutError::Flows(message.into())
}

fn file_error(path: &str, reason: impl Into<String>) -> LayoutError {
    LayoutError::File {
        path: shown(path),
        reason: reason.into(),
    }
}

/// A path or name as it may be shown: escaped, at most 200 characters.
fn shown(s: &str) -> String {
    let escaped: String = s.escape_debug().collect();
    if escaped.chars().count() > 200 {
        let cut: String = escaped.chars().take(199).collect();
        format!("{cut}…")
    } else {
        escaped
    }
}

/// The properties kept in files of their own, by node type: (property,
/// file suffix).
fn code_properties(node: &Map<String, Value>) -> Vec<(&'static str, String)> {
    match node.get("type").and_then(Value::as_str) {
        Some("function") => vec![
            ("func", "func.js".to_string()),
            ("initialize", "initialize.js".to_string()),
            ("finalize", "finalize.js".to_string()),
        ],
        Some("template") => {
            let ext = match node.get("format").and_then(Value::as_str) {
                Some("html" | "handlebars" | "mustache") | None => "html",
                Some("javascript") => "js",
                Some("json") => "json",
                Some("css") => "css",
                Some("markdown") => "md",
                Some("yaml") => "yaml",
                Some("python") => "py",
                Some("sql") => "sql",
                Some(_) => "txt",
            };
            vec![("template", format!("template.{ext}"))]
        }
        // Node-RED dashboards keep their template's HTML in `format`.
        Some("ui_template" | "ui-template") => vec![("format", "template.html".to_string())],
        _ => Vec::new(),
    }
}

/// Properties a `code` entry may name.
const CODE_PROPERTIES: [&str; 5] = ["func", "initialize", "finalize", "template", "format"];

/// `[a-z0-9-]`, runs of anything else as one `-`, at most 40 characters;
/// `fallback` when nothing is left.
pub fn slug(s: &str, fallback: &str) -> String {
    let mut out = String::new();
    let mut gap = false;
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if gap && !out.is_empty() {
                if out.len() + 1 >= MAX_SLUG {
                    break;
                }
                out.push('-');
            }
            gap = false;
            out.push(c);
            if out.len() >= MAX_SLUG {
                break;
            }
        } else {
            gap = true;
        }
    }
    if out.is_empty() {
        fallback.to_string()
    } else {
        out
    }
}

/// An id as a path-safe name: `[a-z0-9]` kept, other bytes as `_xx`; when
/// that is longer than 64 characters, `_h` and 32 hex digits of its
/// SHA-256. Distinct ids give distinct names (and never contain `-`).
pub fn encode_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            out.push(char::from(b));
        } else {
            out.push('_');
            out.push_str(&format!("{b:02x}"));
        }
    }
    if out.len() > MAX_ENCODED_ID {
        let digest = hex::encode(Sha256::digest(id.as_bytes()));
        return format!("_h{}", &digest[..32]);
    }
    if out.is_empty() {
        // An empty id is refused before this; keep names non-empty anyway.
        return "_".to_string();
    }
    out
}

/// Pretty JSON with the keys sorted at every level, ending with a line break.
pub fn pretty(value: &Value) -> String {
    let mut out = String::new();
    write_pretty(value, 0, &mut out);
    out.push('\n');
    out
}

fn indent(level: usize, out: &mut String) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn write_pretty(value: &Value, level: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push_str("{\n");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                indent(level + 1, out);
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(": ");
                if let Some(v) = map.get(key) {
                    write_pretty(v, level + 1, out);
                }
            }
            out.push('\n');
            indent(level, out);
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                indent(level + 1, out);
                write_pretty(item, level + 1, out);
            }
            out.push('\n');
            indent(level, out);
            out.push(']');
        }
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A tab or subflow and the nodes in it.
struct Container<'a> {
    /// `tab` or `subflow`.
    key: &'static str,
    dir: String,
    node: &'a Map<String, Value>,
    members: Vec<&'a Map<String, Value>>,
}

/// One directory's file: its nodes with their code taken out, and the
/// code files.
struct Written {
    nodes: Vec<Value>,
    code: Map<String, Value>,
    files: Vec<(String, Vec<u8>)>,
}

/// Takes the code out of `nodes` into files of `dir`.
fn take_code(nodes: &[&Map<String, Value>]) -> Written {
    let mut written = Written {
        nodes: Vec::with_capacity(nodes.len()),
        code: Map::new(),
        files: Vec::new(),
    };
    for node in nodes {
        let mut node = (*node).clone();
        let id = node
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = match node.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => node
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("node")
                .to_string(),
        };
        let stem = format!("{}-{}", slug(&name, "node"), encode_id(&id));
        let mut entry = Map::new();
        for (property, suffix) in code_properties(&node) {
            let text = match node.get(property) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => continue,
            };
            node.remove(property);
            let file = format!("{stem}.{suffix}");
            let mut bytes = text.into_bytes();
            bytes.push(b'\n');
            written.files.push((file.clone(), bytes));
            entry.insert(property.to_string(), Value::String(file));
        }
        if !entry.is_empty() {
            written.code.insert(id, Value::Object(entry));
        }
        written.nodes.push(Value::Object(node));
    }
    written
}

/// The flows as files. `flows` is Node-RED's array of nodes, each an object
/// with a unique string `id` and no credentials in it.
pub fn to_files(
    flows: &Value,
    extra: &LayoutExtra,
) -> Result<BTreeMap<String, Vec<u8>>, LayoutError> {
    let nodes = flows
        .as_array()
        .ok_or_else(|| flows_error("the flows are not an array of nodes"))?;
    let mut objects = Vec::with_capacity(nodes.len());
    let mut ids = HashSet::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let node = node
            .as_object()
            .ok_or_else(|| flows_error(format!("entry {i} is not an object")))?;
        let id = match node.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.as_str(),
            _ => return Err(flows_error(format!("entry {i} has no id"))),
        };
        if !ids.insert(id) {
            return Err(flows_error(format!("the id {} is used twice", shown(id))));
        }
        if node.contains_key("credentials") {
            return Err(flows_error(format!(
                "node {} holds credentials in the clear",
                shown(id)
            )));
        }
        objects.push((id, node));
    }
    if let Some(sealed) = &extra.credentials_sealed {
        check_sealed_text(sealed).map_err(flows_error)?;
    }

    // Tabs and subflows first, so members find them wherever they are.
    let mut containers: Vec<Container<'_>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (id, node) in &objects {
        let (key, parent, label) = match node.get("type").and_then(Value::as_str) {
            Some("tab") => ("tab", TABS, "label"),
            Some("subflow") => ("subflow", SUBFLOWS, "name"),
            _ => continue,
        };
        let title = node.get(label).and_then(Value::as_str).unwrap_or_default();
        index.insert(id, containers.len());
        containers.push(Container {
            key,
            dir: format!("{parent}/{}-{}", slug(title, key), encode_id(id)),
            node,
            members: Vec::new(),
        });
    }
    let mut global: Vec<&Map<String, Value>> = Vec::new();
    for (id, node) in &objects {
        if index.contains_key(id) {
            continue;
        }
        match node
            .get("z")
            .and_then(Value::as_str)
            .and_then(|z| index.get(z))
        {
            Some(&i) => containers[i].members.push(node),
            None => global.push(node),
        }
    }

    let mut files = BTreeMap::new();
    let mut put = |path: String, bytes: Vec<u8>| -> Result<(), LayoutError> {
        if files.insert(path.clone(), bytes).is_some() {
            return Err(flows_error(format!("two files would be {}", shown(&path))));
        }
        Ok(())
    };
    let mut tabs = Vec::new();
    for c in &containers {
        let written = take_code(&c.members);
        let own = take_code(&[c.node]);
        let mut code = written.code;
        code.extend(own.code);
        let container = own.nodes.into_iter().next().unwrap_or(Value::Null);
        let mut doc = Map::new();
        doc.insert(c.key.to_string(), container);
        doc.insert("nodes".to_string(), Value::Array(written.nodes));
        doc.insert("code".to_string(), Value::Object(code));
        put(
            format!("{}/{FLOW_FILE}", c.dir),
            pretty(&Value::Object(doc)).into_bytes(),
        )?;
        for (name, bytes) in written.files.into_iter().chain(own.files) {
            put(format!("{}/{name}", c.dir), bytes)?;
        }
        if c.key == "tab" {
            tabs.push(serde_json::json!({
                "id": c.node.get("id"),
                "label": c.node.get("label"),
                "dir": c.dir,
            }));
        }
    }
    if !global.is_empty() {
        let written = take_code(&global);
        let mut doc = Map::new();
        doc.insert("nodes".to_string(), Value::Array(written.nodes));
        doc.insert("code".to_string(), Value::Object(written.code));
        put(
            format!("{GLOBAL}/{CONFIG_FILE}"),
            pretty(&Value::Object(doc)).into_bytes(),
        )?;
        for (name, bytes) in written.files {
            put(format!("{GLOBAL}/{name}"), bytes)?;
        }
    }
    let mut manifest = Map::new();
    manifest.insert("format".into(), Value::String(FORMAT.into()));
    manifest.insert(
        "order".into(),
        Value::Array(
            objects
                .iter()
                .map(|(id, _)| Value::String((*id).to_string()))
                .collect(),
        ),
    );
    // For readers: the tabs in the editor's order and where each lives.
    manifest.insert("tabs".into(), Value::Array(tabs));
    manifest.insert(
        "env_names".into(),
        Value::Array(
            extra
                .env_names
                .iter()
                .map(|n| Value::String(n.clone()))
                .collect(),
        ),
    );
    manifest.insert(
        "modules".into(),
        Value::Object(
            extra
                .modules
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
    );
    if let Some(source) = &extra.source {
        manifest.insert(
            "source".into(),
            serde_json::to_value(source).map_err(|e| flows_error(e.to_string()))?,
        );
    }
    if extra.credentials_sealed.is_some() {
        manifest.insert("credentials".into(), Value::String(CREDENTIALS.into()));
    }
    put(
        MANIFEST.to_string(),
        pretty(&Value::Object(manifest)).into_bytes(),
    )?;
    if let Some(sealed) = &extra.credentials_sealed {
        let mut text = sealed.clone().into_bytes();
        text.push(b'\n');
        put(CREDENTIALS.to_string(), text)?;
    }
    Ok(files)
}

/// Sealed credentials are base64 text: nothing else is written or read.
fn check_sealed_text(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("the sealed credentials are empty".into());
    }
    if text.len() > MAX_CREDENTIALS {
        return Err("the sealed credentials are larger than 16 MiB".into());
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return Err("the sealed credentials are not base64 text".into());
    }
    Ok(())
}

/// Any path of the tree: relative, no empty, `.` or `..` components, no
/// `.git`, no control characters or backslashes, at most 4096 bytes.
pub fn check_tree_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_PATH {
        return Err("a path is empty or longer than 4096 bytes".into());
    }
    if path.starts_with('/') {
        return Err("absolute paths are refused".into());
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err("control characters and backslashes are refused in paths".into());
    }
    for component in path.split('/') {
        match component {
            "" => return Err("empty path components are refused".into()),
            "." | ".." => return Err("'.' and '..' are refused in paths".into()),
            c if c.eq_ignore_ascii_case(".git") => return Err("'.git' is refused in paths".into()),
            c if c.len() > MAX_NAME => {
                return Err("a path component is longer than 255 bytes".into())
            }
            _ => {}
        }
    }
    Ok(())
}

/// A name inside `tabs/`, `subflows/` or `global/`: `[a-z0-9_.-]`, not
/// starting with `.` or `-`.
fn layout_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// The layout's part a path belongs to.
enum Place<'a> {
    Manifest,
    Credentials,
    /// (`tab`/`subflow`/`global`, directory, file name)
    InDir(&'static str, &'a str, &'a str),
    Elsewhere,
}

fn place(path: &str) -> Result<Place<'_>, LayoutError> {
    if path == MANIFEST {
        return Ok(Place::Manifest);
    }
    if path == CREDENTIALS {
        return Ok(Place::Credentials);
    }
    let parts: Vec<&str> = path.split('/').collect();
    let (kind, expected) = match parts[0] {
        TABS => ("tab", 3),
        SUBFLOWS => ("subflow", 3),
        GLOBAL => ("global", 2),
        _ => return Ok(Place::Elsewhere),
    };
    if parts.len() != expected {
        return Err(file_error(
            path,
            format!("{} holds files one level down only", parts[0]),
        ));
    }
    if let Some(bad) = parts[1..].iter().find(|p| !layout_name(p)) {
        return Err(file_error(
            path,
            format!(
                "{} is not a layout name ([a-z0-9_.-], not starting with '.' or '-')",
                shown(bad)
            ),
        ));
    }
    let dir_len = if kind == "global" {
        GLOBAL.len()
    } else {
        parts[0].len() + 1 + parts[1].len()
    };
    let dir = &path[..dir_len];
    let name = &path[dir_len + 1..];
    Ok(Place::InDir(kind, dir, name))
}

/// The manifest as read.
#[derive(Deserialize)]
struct Manifest {
    format: String,
    #[serde(default)]
    order: Vec<String>,
    #[serde(default)]
    env_names: Vec<String>,
    #[serde(default)]
    modules: BTreeMap<String, String>,
    #[serde(default)]
    source: Option<Source>,
    // `tabs` and `credentials` are for readers; the files decide.
}

/// A directory's `flow.json` or `config.json`, as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirFile {
    #[serde(default)]
    tab: Option<Map<String, Value>>,
    #[serde(default)]
    subflow: Option<Map<String, Value>>,
    nodes: Vec<Value>,
    #[serde(default)]
    code: BTreeMap<String, BTreeMap<String, String>>,
}

fn text_of(path: &str, bytes: &[u8]) -> Result<String, LayoutError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| file_error(path, "is not UTF-8 text"))
}

/// Reads one directory: its container (for tabs and subflows) and nodes,
/// code put back. The nodes in the order of the file, container first.
fn read_dir(
    kind: &'static str,
    dir: &str,
    names: &BTreeSet<&str>,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<Map<String, Value>>, LayoutError> {
    let main = if kind == "global" {
        CONFIG_FILE
    } else {
        FLOW_FILE
    };
    let main_path = format!("{dir}/{main}");
    let bytes = files
        .get(&main_path)
        .ok_or_else(|| file_error(dir, format!("has no {main}")))?;
    let doc: DirFile = serde_json::from_slice(bytes)
        .map_err(|e| file_error(&main_path, format!("is not the layout's JSON: {e}")))?;
    let container = match (kind, doc.tab, doc.subflow) {
        ("tab", Some(tab), None) => Some(tab),
        ("subflow", None, Some(subflow)) => Some(subflow),
        ("global", None, None) => None,
        _ => {
            let wanted = match kind {
                "tab" => "a \"tab\" object (and no \"subflow\")",
                "subflow" => "a \"subflow\" object (and no \"tab\")",
                _ => "no \"tab\" or \"subflow\"",
            };
            return Err(file_error(&main_path, format!("must hold {wanted}")));
        }
    };
    let container_id = match &container {
        Some(c) => {
            let id = node_id(&main_path, c)?;
            if c.get("type").and_then(Value::as_str) != Some(kind) {
                return Err(file_error(
                    &main_path,
                    format!("its {kind} object must have type \"{kind}\""),
                ));
            }
            Some(id)
        }
        None => None,
    };
    let mut out: Vec<Map<String, Value>> = Vec::with_capacity(doc.nodes.len() + 1);
    if let Some(c) = container.clone() {
        out.push(c);
    }
    for (i, node) in doc.nodes.into_iter().enumerate() {
        let Value::Object(node) = node else {
            return Err(file_error(
                &main_path,
                format!("nodes[{i}] is not an object"),
            ));
        };
        let id = node_id(&main_path, &node)?;
        if let Some(cid) = &container_id {
            if node.get("z").and_then(Value::as_str) != Some(cid.as_str()) {
                return Err(file_error(
                    &main_path,
                    format!(
                        "node {} is in the {kind} {} but its \"z\" names another; move it to that {kind}'s directory or set \"z\"",
                        shown(&id),
                        shown(cid)
                    ),
                ));
            }
        }
        out.push(node);
    }
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for (id, properties) in &doc.code {
        let Some(node) = out
            .iter_mut()
            .find(|n| n.get("id").and_then(Value::as_str) == Some(id.as_str()))
        else {
            return Err(file_error(
                &main_path,
                format!(
                    "\"code\" names node {}, which is not in this file",
                    shown(id)
                ),
            ));
        };
        for (property, file) in properties {
            if !CODE_PROPERTIES.contains(&property.as_str()) {
                return Err(file_error(
                    &main_path,
                    format!(
                        "\"code\" may name {} only, not {}",
                        CODE_PROPERTIES.join(", "),
                        shown(property)
                    ),
                ));
            }
            if !layout_name(file) || file == main {
                return Err(file_error(
                    &main_path,
                    format!(
                        "\"code\" names the file {}, which is not a layout name",
                        shown(file)
                    ),
                ));
            }
            if !names.contains(file.as_str()) {
                return Err(file_error(
                    &main_path,
                    format!("\"code\" names {}, which is missing", shown(file)),
                ));
            }
            if !used.insert(file.as_str()) {
                return Err(file_error(
                    &main_path,
                    format!("\"code\" names {} twice", shown(file)),
                ));
            }
            if node.contains_key(property.as_str()) {
                return Err(file_error(
                    &main_path,
                    format!(
                        "node {} has {} both in the file and in {}",
                        shown(id),
                        shown(property),
                        shown(file)
                    ),
                ));
            }
            let path = format!("{dir}/{file}");
            let bytes = files
                .get(&path)
                .ok_or_else(|| file_error(&path, "is missing"))?;
            let mut text = text_of(&path, bytes)?;
            if text.ends_with('\n') {
                text.pop();
            }
            node.insert(property.clone(), Value::String(text));
        }
    }
    if let Some(stray) = names.iter().find(|n| **n != main && !used.contains(*n)) {
        return Err(file_error(
            &format!("{dir}/{stray}"),
            format!("is not named in {main}'s \"code\""),
        ));
    }
    Ok(out)
}

fn node_id(path: &str, node: &Map<String, Value>) -> Result<String, LayoutError> {
    match node.get("id") {
        Some(Value::String(id)) if !id.is_empty() => {
            if node.contains_key("credentials") {
                return Err(file_error(
                    path,
                    format!(
                        "node {} holds credentials in the clear; they belong in credentials.sealed only",
                        shown(id)
                    ),
                ));
            }
            Ok(id.clone())
        }
        _ => Err(file_error(path, "a node has no string id")),
    }
}

/// The flows and what lies beside them, from the files of a tree.
pub fn from_files(files: &BTreeMap<String, Vec<u8>>) -> Result<(Value, LayoutExtra), LayoutError> {
    if files.len() > MAX_FILES {
        return Err(LayoutError::TooManyFiles);
    }
    let mut total: usize = 0;
    for bytes in files.values() {
        total = total
            .checked_add(bytes.len())
            .ok_or(LayoutError::TooLarge)?;
    }
    if total > MAX_TOTAL_BYTES {
        return Err(LayoutError::TooLarge);
    }
    for path in files.keys() {
        check_tree_path(path).map_err(|reason| file_error(path, reason))?;
    }

    let mut dirs: BTreeMap<&str, (&'static str, BTreeSet<&str>)> = BTreeMap::new();
    let mut manifest = None;
    let mut sealed = None;
    for (path, bytes) in files {
        match place(path)? {
            Place::Manifest => manifest = Some(bytes),
            Place::Credentials => sealed = Some((path, bytes)),
            Place::InDir(kind, dir, name) => {
                dirs.entry(dir)
                    .or_insert_with(|| (kind, BTreeSet::new()))
                    .1
                    .insert(name);
            }
            Place::Elsewhere => {}
        }
    }
    let manifest = manifest.ok_or_else(|| {
        file_error(
            MANIFEST,
            "is missing: this branch does not hold a Redwall snapshot",
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| file_error(MANIFEST, format!("is not the layout's manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(file_error(
            MANIFEST,
            format!(
                "is of format {}; this Redwall reads {FORMAT}",
                shown(&manifest.format)
            ),
        ));
    }
    let credentials_sealed = match sealed {
        None => None,
        Some((path, bytes)) => {
            let text = text_of(path, bytes)?;
            let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
            check_sealed_text(text).map_err(|reason| file_error(path, reason))?;
            Some(text.to_string())
        }
    };

    let mut nodes: Vec<Map<String, Value>> = Vec::new();
    for (dir, (kind, names)) in &dirs {
        nodes.extend(read_dir(kind, dir, names, files)?);
    }
    let mut by_id: HashMap<String, usize> = HashMap::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let id = node
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if by_id.insert(id.clone(), i).is_some() {
            return Err(flows_error(format!(
                "the id {} is used by two nodes",
                shown(&id)
            )));
        }
    }
    let mut taken = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    let mut listed = HashSet::with_capacity(manifest.order.len());
    for id in &manifest.order {
        if !listed.insert(id.as_str()) {
            return Err(file_error(
                MANIFEST,
                format!("\"order\" lists {} twice", shown(id)),
            ));
        }
        if let Some(&i) = by_id.get(id) {
            taken[i] = true;
            order.push(i);
        }
    }
    order.extend((0..nodes.len()).filter(|i| !taken[*i]));
    let mut slots: Vec<Option<Map<String, Value>>> = nodes.into_iter().map(Some).collect();
    let flows: Vec<Value> = order
        .into_iter()
        .filter_map(|i| slots[i].take().map(Value::Object))
        .collect();
    Ok((
        Value::Array(flows),
        LayoutExtra {
            source: manifest.source,
            env_names: manifest.env_names,
            modules: manifest.modules,
            credentials_sealed,
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn sample() -> Value {
        json!([
            {"id": "t1", "type": "tab", "label": "Main line", "disabled": false, "info": ""},
            {"id": "h1", "type": "http in", "z": "t1", "url": "/hello", "method": "get", "wires": [["f1"]]},
            {"id": "f1", "type": "function", "z": "t1", "name": "greet", "func": "const who = 'world';\nmsg.payload = 'hello, ' + who;\nreturn msg;", "initialize": "", "finalize": "// bye\n", "outputs": 1, "wires": [["r1"]]},
            {"id": "r1", "type": "http response", "z": "t1", "wires": []},
            {"id": "b1", "type": "mqtt-broker", "name": "plant", "broker": "127.0.0.1"},
            {"id": "s1", "type": "subflow", "name": "Double it", "in": [], "out": []},
            {"id": "f2", "type": "function", "z": "s1", "func": "return msg;"},
            {"id": "tp", "type": "template", "z": "t1", "format": "handlebars", "template": "<p>{{payload}}</p>"},
            {"id": "orphan", "type": "inject", "z": "nowhere"},
            {"id": "t2", "type": "tab", "label": "Zweite Seite ✓"}
        ])
    }

    fn extra() -> LayoutExtra {
        LayoutExtra {
            source: Some(Source {
                snapshot_id: "abc".into(),
                statement: "{\"v\":1}".into(),
                signature: "00ff".into(),
                signing_key: "a2V5".into(),
            }),
            env_names: vec!["B".into(), "A".into()],
            modules: BTreeMap::from([("node-red-contrib-x".to_string(), "1.2.3".to_string())]),
            credentials_sealed: Some("c2VhbGVk".into()),
        }
    }

    fn text(files: &BTreeMap<String, Vec<u8>>, path: &str) -> String {
        String::from_utf8(files[path].clone()).unwrap()
    }

    #[test]
    fn the_layout_is_one_directory_per_tab_with_code_as_files() {
        let files = to_files(&sample(), &extra()).unwrap();
        let paths: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "credentials.sealed",
                "global/config.json",
                "redwall-snapshot.json",
                "subflows/double-it-s1/flow.json",
                "subflows/double-it-s1/function-f2.func.js",
                "tabs/main-line-t1/flow.json",
                "tabs/main-line-t1/greet-f1.finalize.js",
                "tabs/main-line-t1/greet-f1.func.js",
                "tabs/main-line-t1/template-tp.template.html",
                "tabs/zweite-seite-t2/flow.json",
            ]
        );
        assert_eq!(
            text(&files, "tabs/main-line-t1/greet-f1.func.js"),
            "const who = 'world';\nmsg.payload = 'hello, ' + who;\nreturn msg;\n"
        );
        assert_eq!(
            text(&files, "tabs/main-line-t1/greet-f1.finalize.js"),
            "// bye\n\n"
        );
        let flow: Value = serde_json::from_slice(&files["tabs/main-line-t1/flow.json"]).unwrap();
        assert_eq!(flow["tab"]["id"], "t1");
        assert!(flow["nodes"][1].get("func").is_none());
        // Empty code stays in the node.
        assert_eq!(flow["nodes"][1]["initialize"], "");
        assert_eq!(flow["code"]["f1"]["func"], "greet-f1.func.js");
        let global: Value = serde_json::from_slice(&files["global/config.json"]).unwrap();
        let ids: Vec<&str> = global["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["b1", "orphan"]);
        let manifest: Value = serde_json::from_slice(&files[MANIFEST]).unwrap();
        assert_eq!(manifest["format"], FORMAT);
        assert_eq!(manifest["tabs"][0]["dir"], "tabs/main-line-t1");
        assert_eq!(manifest["tabs"][1]["dir"], "tabs/zweite-seite-t2");
        assert_eq!(text(&files, CREDENTIALS), "c2VhbGVk\n");
    }

    #[test]
    fn a_round_trip_is_exact() {
        let flows = sample();
        let files = to_files(&flows, &extra()).unwrap();
        let (back, extra_back) = from_files(&files).unwrap();
        assert_eq!(back, flows);
        assert_eq!(extra_back, extra());
        // And the bytes are stable.
        assert_eq!(to_files(&back, &extra_back).unwrap(), files);
    }

    #[test]
    fn empty_flows_and_no_extras_round_trip() {
        let files = to_files(&json!([]), &LayoutExtra::default()).unwrap();
        assert_eq!(files.len(), 1);
        let (back, extra) = from_files(&files).unwrap();
        assert_eq!(back, json!([]));
        assert_eq!(extra, LayoutExtra::default());
    }

    #[test]
    fn a_reviewers_edit_of_a_js_file_reaches_the_flows() {
        let mut files = to_files(&sample(), &extra()).unwrap();
        files.insert(
            "tabs/main-line-t1/greet-f1.func.js".into(),
            b"msg.payload = 'edited';\nreturn msg;\n".to_vec(),
        );
        // An editor's line endings at the end are not doubled.
        let (flows, _) = from_files(&files).unwrap();
        assert_eq!(flows[2]["func"], "msg.payload = 'edited';\nreturn msg;");
        // A README and other files beside the layout are left alone.
        files.insert("README.md".into(), b"# flows".to_vec());
        files.insert("docs/Some Notes.txt".into(), b"x".to_vec());
        assert!(from_files(&files).is_ok());
    }

    #[test]
    fn nodes_added_by_a_reviewer_come_after_the_listed_ones() {
        let mut files = to_files(&sample(), &LayoutExtra::default()).unwrap();
        let path = "tabs/zweite-seite-t2/flow.json";
        let mut flow: Value = serde_json::from_slice(&files[path]).unwrap();
        flow["nodes"] = json!([{"id": "new1", "type": "debug", "z": "t2"}]);
        files.insert(path.into(), pretty(&flow).into_bytes());
        let (flows, _) = from_files(&files).unwrap();
        let ids: Vec<&str> = flows
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.last(), Some(&"new1"));
        assert_eq!(ids.len(), 11);
    }

    #[test]
    fn flows_that_cannot_be_laid_out_are_refused() {
        let extra = LayoutExtra::default();
        for flows in [
            json!({"flows": []}),
            json!([1]),
            json!([{"type": "tab"}]),
            json!([{"id": ""}]),
            json!([{"id": 7}]),
            json!([{"id": "a"}, {"id": "a"}]),
            json!([{"id": "a", "credentials": {"password": "p"}}]),
        ] {
            assert!(to_files(&flows, &extra).is_err(), "{flows}");
        }
        let bad = LayoutExtra {
            credentials_sealed: Some("not base64!\n../x".into()),
            ..LayoutExtra::default()
        };
        assert!(to_files(&json!([]), &bad).is_err());
    }

    #[test]
    fn paths_from_ids_and_names_are_safe() {
        let flows = json!([
            {"id": "../../etc", "type": "tab", "label": "../../../root"},
            {"id": "/abs", "type": "function", "z": "../../etc", "name": "..", "func": "x"},
            {"id": "x".repeat(500), "type": "subflow", "name": "\u{0}\n"},
            {"id": "A.B c", "type": "function", "name": "-rf", "func": "y"},
            {"id": ".git", "type": "function", "z": "../../etc", "func": "z"}
        ]);
        let files = to_files(&flows, &LayoutExtra::default()).unwrap();
        for path in files.keys() {
            check_tree_path(path).unwrap();
            assert!(
                matches!(place(path).unwrap(), Place::Manifest | Place::InDir(..)),
                "{path}"
            );
            assert!(path.len() < 200, "{path}");
        }
        let (back, _) = from_files(&files).unwrap();
        assert_eq!(back, flows);
    }

    #[test]
    fn ids_encode_without_collisions() {
        let long = "x".repeat(70);
        let ids = [
            "a",
            "A",
            "_41",
            "a.b",
            "a_2eb",
            "a-b",
            "",
            "é",
            long.as_str(),
        ];
        let encoded: BTreeSet<String> = ids.iter().map(|i| encode_id(i)).collect();
        assert_eq!(encoded.len(), ids.len());
        for e in &encoded {
            assert!(e
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert!(e.len() <= MAX_ENCODED_ID);
        }
        assert_eq!(slug("  Hello,  World! ", "x"), "hello-world");
        assert_eq!(slug("✓✓", "tab"), "tab");
        let long = slug(&"ab ".repeat(40), "x");
        assert!(long.len() <= MAX_SLUG && !long.ends_with('-'), "{long}");
    }

    fn base() -> BTreeMap<String, Vec<u8>> {
        to_files(&sample(), &extra()).unwrap()
    }

    fn refused(files: &BTreeMap<String, Vec<u8>>) -> String {
        match from_files(files) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn hostile_paths_are_refused() {
        for path in [
            "/etc/passwd",
            "../x",
            "tabs/../../x",
            "a//b",
            "./x",
            "tabs/main-line-t1/../x.js",
            ".git/config",
            "sub/.GIT/hooks/x",
            "tabs/x\u{0}y/flow.json",
            "a\\b",
            "tabs/Main/flow.json",
            "tabs/.hidden/flow.json",
            "tabs/-x/flow.json",
            "tabs/main-line-t1/sub/x.js",
            "tabs/flow.json",
            "global/x/config.json",
            "tabs/a b/flow.json",
        ] {
            let mut files = base();
            files.insert(path.to_string(), b"{}".to_vec());
            let e = refused(&files);
            assert!(!e.is_empty(), "{path}");
        }
        let mut files = base();
        files.insert(format!("a/{}", "b".repeat(300)), Vec::new());
        refused(&files);
    }

    #[test]
    fn limits_on_count_and_size_hold() {
        let mut files = base();
        for i in 0..MAX_FILES {
            files.insert(format!("extra/{i}"), Vec::new());
        }
        assert_eq!(from_files(&files), Err(LayoutError::TooManyFiles));
        let mut files = base();
        files.insert("big".into(), vec![b'x'; MAX_TOTAL_BYTES]);
        assert_eq!(from_files(&files), Err(LayoutError::TooLarge));
    }

    #[test]
    fn broken_or_smuggling_files_are_refused() {
        // No manifest, wrong format.
        let mut files = base();
        files.remove(MANIFEST);
        assert!(refused(&files).contains("missing"));
        let mut files = base();
        files.insert(MANIFEST.into(), br#"{"format":"other/v9"}"#.to_vec());
        assert!(refused(&files).contains("format"));
        // A code file nobody names; a named one missing; code not UTF-8.
        let mut files = base();
        files.insert("tabs/main-line-t1/extra.func.js".into(), b"evil()".to_vec());
        assert!(refused(&files).contains("not named"));
        let mut files = base();
        files.remove("tabs/main-line-t1/greet-f1.func.js");
        assert!(refused(&files).contains("missing"));
        let mut files = base();
        files.insert(
            "tabs/main-line-t1/greet-f1.func.js".into(),
            vec![0xff, 0xfe],
        );
        assert!(refused(&files).contains("UTF-8"));
        // A directory without its flow.json.
        let mut files = base();
        files.insert("tabs/new-tab-t9/x.func.js".into(), b"x".to_vec());
        assert!(refused(&files).contains("flow.json"));
        // Credentials in the clear in a node, or a non-base64 sealed file.
        let path = "tabs/main-line-t1/flow.json";
        let mut flow: Value = serde_json::from_slice(&base()[path]).unwrap();
        flow["nodes"][0]["credentials"] = json!({"password": "p"});
        let mut files = base();
        files.insert(path.into(), pretty(&flow).into_bytes());
        assert!(refused(&files).contains("credentials"));
        let mut files = base();
        files.insert(CREDENTIALS.into(), b"{\"password\":\"p\"}".to_vec());
        assert!(refused(&files).contains("base64"));
        // A node whose z names another tab; an id used twice; code for a
        // node of another file, naming a file outside its directory, or a
        // property that is not code.
        let mut flow: Value = serde_json::from_slice(&base()[path]).unwrap();
        flow["nodes"][0]["z"] = json!("t2");
        let mut files = base();
        files.insert(path.into(), pretty(&flow).into_bytes());
        assert!(refused(&files).contains("\"z\""));
        let mut flow: Value = serde_json::from_slice(&base()[path]).unwrap();
        flow["nodes"][0]["id"] = json!("b1");
        let mut files = base();
        files.insert(path.into(), pretty(&flow).into_bytes());
        assert!(refused(&files).contains("two nodes"));
        for code in [
            json!({"b1": {"func": "greet-f1.func.js"}}),
            json!({"f1": {"func": "../../global/config.json"}}),
            json!({"f1": {"func": "flow.json"}}),
            json!({"f1": {"wires": "greet-f1.func.js"}}),
            json!({"f1": {"func": "greet-f1.func.js", "finalize": "greet-f1.func.js"}}),
        ] {
            let mut flow: Value = serde_json::from_slice(&base()[path]).unwrap();
            flow["code"] = code.clone();
            let mut files = base();
            files.insert(path.into(), pretty(&flow).into_bytes());
            refused(&files);
        }
        // Unknown keys, a tab file holding a subflow, an order listing an id twice.
        let mut flow: Value = serde_json::from_slice(&base()[path]).unwrap();
        flow["extra"] = json!(1);
        let mut files = base();
        files.insert(path.into(), pretty(&flow).into_bytes());
        refused(&files);
        let mut flow: Value = serde_json::from_slice(&base()[path]).unwrap();
        flow["tab"]["type"] = json!("subflow");
        let mut files = base();
        files.insert(path.into(), pretty(&flow).into_bytes());
        refused(&files);
        let mut manifest: Value = serde_json::from_slice(&base()[MANIFEST]).unwrap();
        manifest["order"] = json!(["t1", "t1"]);
        let mut files = base();
        files.insert(MANIFEST.into(), pretty(&manifest).into_bytes());
        assert!(refused(&files).contains("twice"));
        // Deeply nested JSON is refused by the parser, not a stack overflow.
        let mut files = base();
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        files.insert(path.into(), deep.into_bytes());
        refused(&files);
    }

    // Random flows: ids of any characters, tabs, subflows, nodes in them,
    // config and orphans, code of every kind, properties of every JSON
    // type, in any order.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            // Numbers as Node-RED writes them: ones that survive JSON text
            // (serde_json's parser is not exact for every float).
            any::<f64>()
                .prop_map(|f| json!(f))
                .prop_filter("survives JSON text", |v| {
                    serde_json::from_str::<Value>(&v.to_string()).ok().as_ref() == Some(v)
                }),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-zA-Z_$.]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[derive(Clone, Debug)]
    struct NodeSpec {
        kind: u8,
        parent: usize,
        id: String,
        name: String,
        code: Option<String>,
        props: Vec<(String, Value)>,
    }

    fn arb_flows() -> impl Strategy<Value = Value> {
        let spec = (
            0u8..9,
            0usize..8,
            prop_oneof!["[0-9a-f]{16}", "[0-9a-f]{7}\\.[0-9a-f]{5}", ".{1,20}"],
            ".{0,16}",
            proptest::option::of(".{0,40}"),
            proptest::collection::vec(("[a-z]{1,8}", arb_json()), 0..4),
        )
            .prop_map(|(kind, parent, id, name, code, props)| NodeSpec {
                kind,
                parent,
                id,
                name,
                code,
                props,
            });
        proptest::collection::vec(spec, 0..24)
            .prop_map(|specs| {
                let mut seen = HashSet::new();
                let specs: Vec<NodeSpec> = specs
                    .into_iter()
                    .filter(|s| seen.insert(s.id.clone()))
                    .collect();
                let containers: Vec<String> = specs
                    .iter()
                    .filter(|s| s.kind <= 1)
                    .map(|s| s.id.clone())
                    .collect();
                let nodes: Vec<Value> = specs
                    .iter()
                    .map(|s| {
                        let mut node = Map::new();
                        for (k, v) in &s.props {
                            node.insert(k.clone(), v.clone());
                        }
                        node.insert("id".into(), json!(s.id));
                        let (ty, z) = match s.kind {
                            0 => ("tab", None),
                            1 => ("subflow", None),
                            2 | 3 => ("function", containers.get(s.parent).cloned()),
                            4 => ("template", containers.get(s.parent).cloned()),
                            5 => ("ui_template", containers.get(s.parent).cloned()),
                            6 => ("mqtt-broker", None),
                            7 => ("inject", Some("no-such-tab".into())),
                            _ => ("debug", containers.get(s.parent).cloned()),
                        };
                        node.insert("type".into(), json!(ty));
                        if let Some(z) = z {
                            node.insert("z".into(), json!(z));
                        }
                        node.insert(
                            if ty == "tab" { "label" } else { "name" }.into(),
                            json!(s.name),
                        );
                        if let Some(code) = &s.code {
                            let property = match ty {
                                "function" if s.kind == 3 => "initialize",
                                "function" => "func",
                                "template" => "template",
                                _ => "format",
                            };
                            node.insert(property.into(), json!(code));
                        }
                        Value::Object(node)
                    })
                    .collect();
                Value::Array(nodes)
            })
            .shuffled()
    }

    trait Shuffle {
        fn shuffled(self) -> proptest::strategy::BoxedStrategy<Value>;
    }

    impl<S: Strategy<Value = Value> + 'static> Shuffle for S {
        fn shuffled(self) -> proptest::strategy::BoxedStrategy<Value> {
            self.prop_flat_map(|v| {
                let items = v.as_array().cloned().unwrap_or_default();
                Just(items).prop_shuffle().prop_map(Value::Array)
            })
            .boxed()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn any_flows_round_trip_exactly(flows in arb_flows(), env in proptest::collection::vec("[A-Z_]{1,8}", 0..3)) {
            let extra = LayoutExtra { env_names: env, ..LayoutExtra::default() };
            let files = to_files(&flows, &extra).unwrap();
            for path in files.keys() {
                prop_assert!(check_tree_path(path).is_ok(), "{}", path);
            }
            let (back, extra_back) = from_files(&files).unwrap();
            prop_assert_eq!(&back, &flows);
            prop_assert_eq!(extra_back, extra);
        }

        #[test]
        fn arbitrary_trees_never_panic(
            entries in proptest::collection::btree_map(
                prop_oneof![
                    Just(MANIFEST.to_string()),
                    Just(CREDENTIALS.to_string()),
                    "(tabs|subflows|global|x)(/[a-z0-9_.\\-]{1,8}){1,3}",
                    ".{1,20}",
                ],
                proptest::collection::vec(any::<u8>(), 0..64),
                0..12,
            )
        ) {
            let _ = from_files(&entries);
        }

        #[test]
        fn mutated_layouts_never_panic(flows in arb_flows(), which in any::<prop::sample::Index>(), byte in any::<u8>(), at in any::<prop::sample::Index>()) {
            let mut files = to_files(&flows, &LayoutExtra::default()).unwrap();
            let keys: Vec<String> = files.keys().cloned().collect();
            let key = which.get(&keys).clone();
            if let Some(bytes) = files.get_mut(&key) {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
            }
            let _ = from_files(&files);
        }
    }
}
