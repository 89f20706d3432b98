//! What changed between two snapshots of an instance's flows, in the terms
//! a Node-RED user thinks in: per tab, which nodes were added, removed or
//! changed, and for function code and other text a line diff.
//!
//! Before a rollback or a promotion a person has to judge what will change,
//! and two JSON documents of a few thousand lines are not something anyone
//! can read. So the diff is computed here, once, for the console, the API
//! and the CLI alike, from the flows arrays Node-RED exports (the caller
//! unwraps the `flows` member of the admin API's v2 format).
//!
//! How entries are grouped:
//! - Tabs (type `tab`) and subflow definitions (type `subflow`) are
//!   containers; every other entry is a node and belongs to the container
//!   its `z` names. A node without `z` (config nodes) belongs to the pseudo
//!   tab "global configuration", which is always listed last.
//! - Nodes are matched by `id` across the whole flow: a node that moved to
//!   another tab is one changed node (field `z`) in its new tab, not a
//!   removal and an addition.
//! - A node's fields are compared as JSON values; `x`, `y`, `w` and `h` are
//!   merged into one field `position`, listed last, so layout noise never
//!   hides a real change.
//! - Code and text fields ([`is_code_field`]) also get a line diff, so a
//!   changed function reads as code, not as one escaped JSON string.
//!
//! Sizes are bounded: at most [`MAX_DIFF_LINES`] diff lines per field and
//! [`MAX_VALUE_CHARS`] characters per shown value, and the line diff of very
//! long texts falls back to "all removed, all added" (see
//! [`MAX_ALIGNED_LINES`]) rather than spending quadratic time; no clock is
//! read to bound it.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;
use serde_json::{Map, Value};
use similar::{capture_diff_slices, Algorithm, DiffTag};

use crate::{refused, RuleError};

/// Most diff lines one field's line diff holds; the rest is counted in a
/// final [`DiffLine::Omitted`] line.
pub const MAX_DIFF_LINES: usize = 5000;
/// Longest shown value (`before`/`after` of a [`FieldChange`]), in
/// characters; longer values are cut and end with "… (N more characters)".
pub const MAX_VALUE_CHARS: usize = 10_000;
/// Longest differing middle part (old and new lines together, after the
/// common first and last lines) that is aligned line by line; a longer one
/// is shown as all its old lines removed and all its new lines added. The
/// alignment costs time proportional to this length times the number of
/// differences, and no deadline can be read from a clock here.
pub const MAX_ALIGNED_LINES: usize = 10_000;

/// The label of the pseudo tab that holds nodes without `z`.
pub const GLOBAL_LABEL: &str = "global configuration";

/// Fields merged into `position`, in the order they are shown.
const POSITION_FIELDS: [&str; 4] = ["x", "y", "w", "h"];

/// The difference of two flows: only the tabs with a change, in the order
/// of the tabs in the newer flows, then the removed tabs in the order of
/// the older flows, then nodes whose `z` names no tab on either side
/// (grouped by that `z`), then the global configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlowDiff {
    pub tabs: Vec<TabDiff>,
}

impl FlowDiff {
    /// Whether the two flows are the same.
    pub fn is_empty(&self) -> bool {
        self.tabs.is_empty()
    }
}

/// What changed in one tab, subflow, or the global configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TabDiff {
    /// The tab's id; `None` for the global configuration.
    pub id: Option<String>,
    /// A tab's `label` (or `name`, or its id), "subflow: {name}" for a
    /// subflow, [`GLOBAL_LABEL`] for the global configuration, "unknown tab
    /// {z}" for nodes whose `z` names no tab. From the newer side when the
    /// tab exists there.
    pub label: String,
    pub change: TabChange,
    /// The tab object's own properties that changed (label, disabled,
    /// info, env, a subflow's ports...). Empty for an added or removed tab.
    pub tab_fields: Vec<FieldChange>,
    /// In the order of the newer flows.
    pub added: Vec<NodeRef>,
    /// In the order of the older flows; every node of a removed tab.
    pub removed: Vec<NodeRef>,
    /// In the order of the newer flows; a moved node is listed in its new tab.
    pub changed: Vec<NodeChange>,
}

/// Whether a tab is new, gone, or there on both sides. The global
/// configuration, and a `z` that names no tab, are always `Changed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TabChange {
    Added,
    Removed,
    Changed,
}

impl TabChange {
    pub fn as_str(self) -> &'static str {
        match self {
            TabChange::Added => "added",
            TabChange::Removed => "removed",
            TabChange::Changed => "changed",
        }
    }
}

/// A node as a person recognises it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeRef {
    pub id: String,
    /// The node's `type`, empty if it has none.
    pub node_type: String,
    /// The node's `name`, or else its `label`, when not empty.
    pub name: Option<String>,
}

/// A node on both sides whose fields differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeChange {
    /// As it is in the newer flows.
    pub node: NodeRef,
    /// Sorted by field name, `position` last.
    pub fields: Vec<FieldChange>,
}

/// One field that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldChange {
    /// The property's name, or `position` for x, y, w and h together.
    pub field: String,
    /// The value as compact JSON (cut at [`MAX_VALUE_CHARS`]), `None` when
    /// the field is absent. For `position`: "x,y" (or "x,y,w,h" when either
    /// side has a size), "-" for a missing part.
    pub before: Option<String>,
    pub after: Option<String>,
    /// For a code or text field ([`is_code_field`]) whose values are
    /// strings (or absent): the line diff.
    pub code: Option<Vec<DiffLine>>,
}

/// One line of a line diff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "op", content = "text", rename_all = "snake_case")]
pub enum DiffLine {
    /// On both sides.
    Same(String),
    /// Only in the newer text.
    Added(String),
    /// Only in the older text.
    Removed(String),
    /// Not a line of the text: "... (N more lines)", always last, when the
    /// diff was cut at [`MAX_DIFF_LINES`].
    Omitted(String),
}

/// Whether a field of a node of this type holds code or text that is best
/// read as lines: a function's `func`, `initialize` and `finalize`; a
/// template's (core, dashboard 1 `ui_template`, dashboard 2 `ui-template`)
/// `template` and `format`; and the markdown `info` of any node or tab.
pub fn is_code_field(node_type: &str, field: &str) -> bool {
    matches!(
        (node_type, field),
        (_, "info")
            | ("function", "func" | "initialize" | "finalize")
            | (
                "template" | "ui_template" | "ui-template",
                "template" | "format"
            )
    )
}

/// One side's entries, checked: ids in order, and each id's object.
struct Flows<'a> {
    order: Vec<&'a str>,
    by_id: HashMap<&'a str, &'a Map<String, Value>>,
}

impl<'a> Flows<'a> {
    fn parse(value: &'a Value, side: &str) -> Result<Self, RuleError> {
        let Value::Array(entries) = value else {
            return Err(refused(
                "invalid_flows",
                format!("the {side} flows must be a JSON array of nodes"),
            ));
        };
        let mut order = Vec::with_capacity(entries.len());
        let mut by_id = HashMap::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let Value::Object(obj) = entry else {
                return Err(refused(
                    "invalid_flows",
                    format!("entry {index} of the {side} flows is not an object"),
                ));
            };
            let id = match obj.get("id") {
                Some(Value::String(id)) if !id.is_empty() => id.as_str(),
                _ => {
                    return Err(refused(
                        "invalid_flows",
                        format!("entry {index} of the {side} flows has no string id"),
                    ))
                }
            };
            if by_id.insert(id, obj).is_some() {
                return Err(refused(
                    "invalid_flows",
                    format!(
                        "entry {index} of the {side} flows repeats the id {}",
                        shorten(id, 64)
                    ),
                ));
            }
            order.push(id);
        }
        Ok(Flows { order, by_id })
    }

    /// The container (tab or subflow) with this id, if it is one here.
    fn container(&self, id: &str) -> Option<&'a Map<String, Value>> {
        self.by_id.get(id).copied().filter(|obj| is_container(obj))
    }

    /// The node (not a container) with this id, if it is one here.
    fn node(&self, id: &str) -> Option<&'a Map<String, Value>> {
        self.by_id.get(id).copied().filter(|obj| !is_container(obj))
    }

    fn containers(&self) -> impl Iterator<Item = (&'a str, &'a Map<String, Value>)> + '_ {
        self.order
            .iter()
            .filter_map(|id| self.container(id).map(|obj| (*id, obj)))
    }

    fn nodes(&self) -> impl Iterator<Item = (&'a str, &'a Map<String, Value>)> + '_ {
        self.order
            .iter()
            .filter_map(|id| self.node(id).map(|obj| (*id, obj)))
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn type_of(obj: &Map<String, Value>) -> &str {
    str_field(obj, "type").unwrap_or("")
}

fn is_container(obj: &Map<String, Value>) -> bool {
    matches!(type_of(obj), "tab" | "subflow")
}

/// The tab a node belongs to: its `z` when that is a non-empty string,
/// else the global configuration (`None`).
fn container_of(obj: &Map<String, Value>) -> Option<&str> {
    str_field(obj, "z")
}

fn node_ref(id: &str, obj: &Map<String, Value>) -> NodeRef {
    NodeRef {
        id: id.to_string(),
        node_type: type_of(obj).to_string(),
        name: str_field(obj, "name")
            .or_else(|| str_field(obj, "label"))
            .map(str::to_string),
    }
}

fn container_label(id: &str, obj: &Map<String, Value>) -> String {
    if type_of(obj) == "subflow" {
        format!("subflow: {}", str_field(obj, "name").unwrap_or(id))
    } else {
        str_field(obj, "label")
            .or_else(|| str_field(obj, "name"))
            .unwrap_or(id)
            .to_string()
    }
}

#[derive(Default)]
struct NodeLists {
    added: Vec<NodeRef>,
    removed: Vec<NodeRef>,
    changed: Vec<NodeChange>,
}

impl NodeLists {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The diff of two flows arrays; refused (`invalid_flows`) when either is
/// not an array of objects, each with a non-empty string `id`, no id twice.
pub fn diff_flows(before: &Value, after: &Value) -> Result<FlowDiff, RuleError> {
    let old = Flows::parse(before, "older")?;
    let new = Flows::parse(after, "newer")?;

    // Nodes, grouped by the container they are listed under.
    let mut lists: HashMap<Option<&str>, NodeLists> = HashMap::new();
    for (id, obj) in new.nodes() {
        let group = lists.entry(container_of(obj)).or_default();
        match old.node(id) {
            Some(was) => {
                let fields = field_changes(was, obj);
                if !fields.is_empty() {
                    group.changed.push(NodeChange {
                        node: node_ref(id, obj),
                        fields,
                    });
                }
            }
            None => group.added.push(node_ref(id, obj)),
        }
    }
    for (id, obj) in old.nodes() {
        if new.node(id).is_none() {
            lists
                .entry(container_of(obj))
                .or_default()
                .removed
                .push(node_ref(id, obj));
        }
    }

    // The order tabs are listed in.
    let mut keys: Vec<&str> = Vec::new();
    let mut listed: HashSet<&str> = HashSet::new();
    let new_tabs = new.containers().map(|(id, _)| id);
    let old_tabs = old.containers().map(|(id, _)| id);
    let new_zs = new.nodes().filter_map(|(_, obj)| container_of(obj));
    let old_zs = old.nodes().filter_map(|(_, obj)| container_of(obj));
    for id in new_tabs.chain(old_tabs).chain(new_zs).chain(old_zs) {
        if listed.insert(id) {
            keys.push(id);
        }
    }

    let mut tabs = Vec::new();
    for id in keys {
        let nodes = lists.remove(&Some(id)).unwrap_or_default();
        let (label, change, tab_fields) = match (old.container(id), new.container(id)) {
            (Some(was), Some(is)) => (
                container_label(id, is),
                TabChange::Changed,
                field_changes(was, is),
            ),
            (None, Some(is)) => (container_label(id, is), TabChange::Added, Vec::new()),
            (Some(was), None) => (container_label(id, was), TabChange::Removed, Vec::new()),
            (None, None) => (format!("unknown tab {id}"), TabChange::Changed, Vec::new()),
        };
        if change != TabChange::Changed || !tab_fields.is_empty() || !nodes.is_empty() {
            tabs.push(TabDiff {
                id: Some(id.to_string()),
                label,
                change,
                tab_fields,
                added: nodes.added,
                removed: nodes.removed,
                changed: nodes.changed,
            });
        }
    }
    if let Some(global) = lists.remove(&None).filter(|nodes| !nodes.is_empty()) {
        tabs.push(TabDiff {
            id: None,
            label: GLOBAL_LABEL.to_string(),
            change: TabChange::Changed,
            tab_fields: Vec::new(),
            added: global.added,
            removed: global.removed,
            changed: global.changed,
        });
    }
    Ok(FlowDiff { tabs })
}

/// The fields of one object (node or tab) that differ, sorted by name,
/// `position` last; `id` is what matched them and is never listed.
fn field_changes(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<FieldChange> {
    let (old_type, new_type) = (type_of(before), type_of(after));
    let names: BTreeSet<&str> = before
        .keys()
        .chain(after.keys())
        .map(String::as_str)
        .filter(|name| *name != "id" && !POSITION_FIELDS.contains(name))
        .collect();
    let mut changes = Vec::new();
    for name in names {
        let (was, is) = (before.get(name), after.get(name));
        if was == is {
            continue;
        }
        let code = if is_code_field(old_type, name) || is_code_field(new_type, name) {
            match (was, is) {
                (None | Some(Value::String(_)), None | Some(Value::String(_))) => Some(line_diff(
                    was.and_then(Value::as_str),
                    is.and_then(Value::as_str),
                )),
                _ => None,
            }
        } else {
            None
        };
        changes.push(FieldChange {
            field: name.to_string(),
            before: was.map(shown_value),
            after: is.map(shown_value),
            code,
        });
    }
    if POSITION_FIELDS
        .iter()
        .any(|name| before.get(*name) != after.get(*name))
    {
        let sized = ["w", "h"]
            .iter()
            .any(|name| before.contains_key(*name) || after.contains_key(*name));
        let shown = if sized {
            &POSITION_FIELDS[..]
        } else {
            &POSITION_FIELDS[..2]
        };
        changes.push(FieldChange {
            field: "position".to_string(),
            before: position(before, shown),
            after: position(after, shown),
            code: None,
        });
    }
    changes
}

fn position(obj: &Map<String, Value>, shown: &[&str]) -> Option<String> {
    if !shown.iter().any(|name| obj.contains_key(*name)) {
        return None;
    }
    let parts: Vec<String> = shown
        .iter()
        .map(|name| obj.get(*name).map_or_else(|| "-".to_string(), shown_value))
        .collect();
    Some(parts.join(","))
}

/// Compact JSON, cut at [`MAX_VALUE_CHARS`].
fn shown_value(value: &Value) -> String {
    shorten(&value.to_string(), MAX_VALUE_CHARS)
}

fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((cut, _)) => {
            let more = text[cut..].chars().count();
            format!("{}… ({more} more characters)", &text[..cut])
        }
    }
}

/// Collects diff lines up to [`MAX_DIFF_LINES`] and counts the rest.
struct Lines {
    lines: Vec<DiffLine>,
    more: usize,
}

impl Lines {
    fn push(&mut self, kind: fn(String) -> DiffLine, texts: &[&str]) {
        let room = MAX_DIFF_LINES.saturating_sub(self.lines.len());
        let (taken, rest) = texts.split_at(room.min(texts.len()));
        self.lines
            .extend(taken.iter().map(|text| kind((*text).to_string())));
        self.more += rest.len();
    }

    fn finish(mut self) -> Vec<DiffLine> {
        if self.more > 0 {
            self.lines
                .push(DiffLine::Omitted(format!("... ({} more lines)", self.more)));
        }
        self.lines
    }
}

/// The line diff of two texts split on `\n`; an absent text has no lines
/// (an empty one has one empty line).
fn line_diff(before: Option<&str>, after: Option<&str>) -> Vec<DiffLine> {
    let old: Vec<&str> = before.map(|s| s.split('\n').collect()).unwrap_or_default();
    let new: Vec<&str> = after.map(|s| s.split('\n').collect()).unwrap_or_default();
    let head = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let tail = old[head..]
        .iter()
        .rev()
        .zip(new[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let old_mid = &old[head..old.len() - tail];
    let new_mid = &new[head..new.len() - tail];

    let mut lines = Lines {
        lines: Vec::new(),
        more: 0,
    };
    lines.push(DiffLine::Same, &old[..head]);
    if old_mid.len() + new_mid.len() <= MAX_ALIGNED_LINES {
        for op in capture_diff_slices(Algorithm::Myers, old_mid, new_mid) {
            let (tag, was, is) = op.as_tag_tuple();
            match tag {
                DiffTag::Equal => lines.push(DiffLine::Same, &old_mid[was]),
                DiffTag::Delete => lines.push(DiffLine::Removed, &old_mid[was]),
                DiffTag::Insert => lines.push(DiffLine::Added, &new_mid[is]),
                DiffTag::Replace => {
                    lines.push(DiffLine::Removed, &old_mid[was]);
                    lines.push(DiffLine::Added, &new_mid[is]);
                }
            }
        }
    } else {
        lines.push(DiffLine::Removed, old_mid);
        lines.push(DiffLine::Added, new_mid);
    }
    lines.push(DiffLine::Same, &old[old.len() - tail..]);
    lines.finish()
}

/// Unchanged lines shown before and after a change in [`render_text`].
pub const CONTEXT_LINES: usize = 3;

/// The diff as plain text for the CLI: per tab a header line, then its
/// changed properties (`~ field: before -> after`), added nodes (`+ node`),
/// removed nodes (`- node`) and changed fields of nodes (`~ node: field`);
/// code fields follow as a line diff with `+`, `-` and ` ` prefixes, at
/// most [`CONTEXT_LINES`] unchanged lines around each change and `...` for
/// the ones skipped. Control characters (a terminal's escape sequences)
/// from the flows are shown escaped. Two equal flows read "no changes".
pub fn render_text(diff: &FlowDiff) -> String {
    if diff.is_empty() {
        return "no changes\n".to_string();
    }
    let mut out = String::new();
    for (index, tab) in diff.tabs.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        match &tab.id {
            Some(id) => out.push_str(&format!(
                "{} ({}): {}\n",
                clean(&tab.label),
                clean(id),
                tab.change.as_str()
            )),
            None => out.push_str(&format!("{}: {}\n", clean(&tab.label), tab.change.as_str())),
        }
        for field in &tab.tab_fields {
            render_field(&mut out, "  ~ ", field);
        }
        for node in &tab.added {
            out.push_str(&format!("  + {}\n", node_text(node)));
        }
        for node in &tab.removed {
            out.push_str(&format!("  - {}\n", node_text(node)));
        }
        for change in &tab.changed {
            let prefix = format!("  ~ {}: ", node_text(&change.node));
            for field in &change.fields {
                render_field(&mut out, &prefix, field);
            }
        }
    }
    out
}

fn render_field(out: &mut String, prefix: &str, field: &FieldChange) {
    out.push_str(prefix);
    out.push_str(&clean(&field.field));
    match &field.code {
        Some(lines) => {
            out.push('\n');
            render_lines(out, lines);
        }
        None => {
            let side = |value: &Option<String>| {
                value
                    .as_deref()
                    .map_or_else(|| "(absent)".to_string(), clean)
            };
            out.push_str(&format!(
                ": {} -> {}\n",
                side(&field.before),
                side(&field.after)
            ));
        }
    }
}

fn render_lines(out: &mut String, lines: &[DiffLine]) {
    let is_change = |line: &DiffLine| matches!(line, DiffLine::Added(_) | DiffLine::Removed(_));
    // Distance from each line to the nearest change before and after it.
    let mut near = vec![usize::MAX; lines.len()];
    let mut last = None;
    for (i, line) in lines.iter().enumerate() {
        if is_change(line) {
            last = Some(i);
        }
        if let Some(at) = last {
            near[i] = i - at;
        }
    }
    last = None;
    for (i, line) in lines.iter().enumerate().rev() {
        if is_change(line) {
            last = Some(i);
        }
        if let Some(at) = last {
            near[i] = near[i].min(at - i);
        }
    }
    let mut skipping = false;
    for (line, distance) in lines.iter().zip(near) {
        let (mark, text) = match line {
            DiffLine::Same(_) if distance > CONTEXT_LINES => {
                if !skipping {
                    out.push_str("    ...\n");
                    skipping = true;
                }
                continue;
            }
            DiffLine::Same(text) => (' ', text),
            DiffLine::Added(text) => ('+', text),
            DiffLine::Removed(text) => ('-', text),
            DiffLine::Omitted(text) => {
                out.push_str(&format!("    {}\n", clean(text)));
                skipping = false;
                continue;
            }
        };
        skipping = false;
        out.push_str(&format!("    {mark} {}\n", clean(text)));
    }
}

fn node_text(node: &NodeRef) -> String {
    let node_type = if node.node_type.is_empty() {
        "node"
    } else {
        &node.node_type
    };
    match &node.name {
        Some(name) => format!("{} {:?} ({})", clean(node_type), name, clean(&node.id)),
        None => format!("{} ({})", clean(node_type), clean(&node.id)),
    }
}

/// The text with control characters other than tab escaped, so flows can
/// never send a terminal escape sequence through the CLI.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn diff(before: Value, after: Value) -> FlowDiff {
        diff_flows(&before, &after).unwrap()
    }

    fn tab(id: &str, label: &str) -> Value {
        json!({"id": id, "type": "tab", "label": label, "disabled": false, "info": ""})
    }

    fn node(id: &str, node_type: &str, z: &str) -> Value {
        json!({"id": id, "type": node_type, "z": z, "name": "", "x": 100, "y": 40, "wires": []})
    }

    fn with(mut value: Value, field: &str, set: Value) -> Value {
        value[field] = set;
        value
    }

    fn ids(nodes: &[NodeRef]) -> Vec<&str> {
        nodes.iter().map(|n| n.id.as_str()).collect()
    }

    fn field_names(change: &NodeChange) -> Vec<&str> {
        change.fields.iter().map(|f| f.field.as_str()).collect()
    }

    #[test]
    fn identical_flows_have_no_diff() {
        let flows = json!([
            tab("t1", "Flow 1"),
            node("n1", "inject", "t1"),
            json!({"id": "c1", "type": "mqtt-broker", "broker": "localhost"})
        ]);
        assert!(diff(flows.clone(), flows.clone()).is_empty());
        assert!(diff(json!([]), json!([])).is_empty());
        assert_eq!(render_text(&FlowDiff::default()), "no changes\n");
    }

    #[test]
    fn added_removed_and_changed_nodes_are_listed_under_their_tab() {
        let before = json!([
            tab("t1", "Flow 1"),
            node("keep", "inject", "t1"),
            node("gone", "debug", "t1"),
            with(node("edit", "change", "t1"), "name", json!("set topic")),
        ]);
        let after = json!([
            tab("t1", "Flow 1"),
            node("keep", "inject", "t1"),
            with(node("new", "debug", "t1"), "name", json!("show")),
            with(
                with(node("edit", "change", "t1"), "name", json!("set topic")),
                "rules",
                json!([{"t": "set"}])
            ),
        ]);
        let d = diff(before, after);
        assert_eq!(d.tabs.len(), 1);
        let t = &d.tabs[0];
        assert_eq!(t.id.as_deref(), Some("t1"));
        assert_eq!(t.label, "Flow 1");
        assert_eq!(t.change, TabChange::Changed);
        assert!(t.tab_fields.is_empty());
        assert_eq!(
            t.added,
            vec![NodeRef {
                id: "new".into(),
                node_type: "debug".into(),
                name: Some("show".into())
            }]
        );
        assert_eq!(
            t.removed,
            vec![NodeRef {
                id: "gone".into(),
                node_type: "debug".into(),
                name: None
            }]
        );
        assert_eq!(t.changed.len(), 1);
        assert_eq!(t.changed[0].node.name.as_deref(), Some("set topic"));
        assert_eq!(
            t.changed[0].fields,
            vec![FieldChange {
                field: "rules".into(),
                before: None,
                after: Some(r#"[{"t":"set"}]"#.into()),
                code: None
            }]
        );
        let text = render_text(&d);
        assert_eq!(
            text,
            "Flow 1 (t1): changed\n  + debug \"show\" (new)\n  - debug (gone)\n  ~ change \"set topic\" (edit): rules: (absent) -> [{\"t\":\"set\"}]\n"
        );
    }

    #[test]
    fn added_and_removed_tabs_carry_all_their_nodes() {
        let before = json!([
            tab("t1", "Old"),
            node("a", "inject", "t1"),
            node("b", "debug", "t1")
        ]);
        let after = json!([
            tab("t2", "New"),
            node("c", "inject", "t2"),
            tab("t3", "Empty")
        ]);
        let d = diff(before, after);
        let summary: Vec<_> = d
            .tabs
            .iter()
            .map(|t| (t.id.as_deref(), t.label.as_str(), t.change))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("t2"), "New", TabChange::Added),
                (Some("t3"), "Empty", TabChange::Added),
                (Some("t1"), "Old", TabChange::Removed),
            ]
        );
        assert_eq!(ids(&d.tabs[0].added), ["c"]);
        assert!(d.tabs[1].added.is_empty() && d.tabs[1].removed.is_empty());
        assert_eq!(ids(&d.tabs[2].removed), ["a", "b"]);
        assert!(d.tabs.iter().all(|t| t.tab_fields.is_empty()));
        let text = render_text(&d);
        assert!(text.starts_with("New (t2): added\n  + inject (c)\n\nEmpty (t3): added\n\nOld (t1): removed\n  - inject (a)\n  - debug (b)\n"), "{text}");
    }

    #[test]
    fn tab_properties_are_tab_fields() {
        let before = json!([tab("t1", "Flow 1")]);
        let after = json!([with(
            with(tab("t1", "Line 1"), "disabled", json!(true)),
            "env",
            json!([{"name": "A", "value": "1", "type": "str"}])
        )]);
        let d = diff(before, after);
        assert_eq!(d.tabs.len(), 1);
        assert_eq!(d.tabs[0].label, "Line 1");
        let names: Vec<_> = d.tabs[0]
            .tab_fields
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(names, ["disabled", "env", "label"]);
        assert_eq!(
            d.tabs[0].tab_fields[2].before.as_deref(),
            Some("\"Flow 1\"")
        );
        assert_eq!(d.tabs[0].tab_fields[2].after.as_deref(), Some("\"Line 1\""));
        assert!(render_text(&d).contains("  ~ label: \"Flow 1\" -> \"Line 1\"\n"));
    }

    #[test]
    fn a_function_code_change_is_a_line_diff() {
        let code_before = "const a = msg.payload;\nif (a > 1) {\n    return msg;\n}\nreturn null;";
        let code_after = "const a = msg.payload;\nif (a > 2) {\n    return msg;\n}\nreturn null;";
        let before = json!([
            tab("t1", "F"),
            with(node("f", "function", "t1"), "func", json!(code_before))
        ]);
        let after = json!([
            tab("t1", "F"),
            with(node("f", "function", "t1"), "func", json!(code_after))
        ]);
        let d = diff(before, after);
        let field = &d.tabs[0].changed[0].fields[0];
        assert_eq!(field.field, "func");
        assert_eq!(
            field.code,
            Some(vec![
                DiffLine::Same("const a = msg.payload;".into()),
                DiffLine::Removed("if (a > 1) {".into()),
                DiffLine::Added("if (a > 2) {".into()),
                DiffLine::Same("    return msg;".into()),
                DiffLine::Same("}".into()),
                DiffLine::Same("return null;".into()),
            ])
        );
        assert_eq!(
            render_text(&d),
            "F (t1): changed\n  ~ function (f): func\n      const a = msg.payload;\n    - if (a > 1) {\n    + if (a > 2) {\n          return msg;\n      }\n      return null;\n"
        );
        let json = serde_json::to_value(field).unwrap();
        assert_eq!(
            json["code"][1],
            json!({"op": "removed", "text": "if (a > 1) {"})
        );
        assert_eq!(
            json["code"][2],
            json!({"op": "added", "text": "if (a > 2) {"})
        );
        assert_eq!(
            json["code"][0],
            json!({"op": "same", "text": "const a = msg.payload;"})
        );
    }

    #[test]
    fn a_code_field_added_or_removed_is_all_added_or_removed() {
        let before = json!([node("f", "function", "t")]);
        let after = json!([with(
            node("f", "function", "t"),
            "initialize",
            json!("a\nb")
        )]);
        let d = diff(before.clone(), after.clone());
        assert_eq!(
            d.tabs[0].changed[0].fields[0].code,
            Some(vec![
                DiffLine::Added("a".into()),
                DiffLine::Added("b".into())
            ])
        );
        let d = diff(after, before);
        assert_eq!(
            d.tabs[0].changed[0].fields[0].code,
            Some(vec![
                DiffLine::Removed("a".into()),
                DiffLine::Removed("b".into())
            ])
        );
    }

    #[test]
    fn a_code_field_that_is_not_a_string_has_no_line_diff() {
        let before = json!([with(
            node("f", "function", "t"),
            "func",
            json!("return msg;")
        )]);
        let after = json!([with(
            node("f", "function", "t"),
            "func",
            json!(["return msg;"])
        )]);
        let field = &diff(before, after).tabs[0].changed[0].fields[0];
        assert_eq!(field.code, None);
        assert_eq!(field.after.as_deref(), Some(r#"["return msg;"]"#));
    }

    #[test]
    fn code_fields_are_the_documented_ones() {
        for (t, f) in [
            ("function", "func"),
            ("function", "initialize"),
            ("function", "finalize"),
            ("template", "template"),
            ("template", "format"),
            ("ui_template", "format"),
            ("ui-template", "format"),
            ("ui_template", "template"),
            ("comment", "info"),
            ("tab", "info"),
            ("inject", "info"),
        ] {
            assert!(is_code_field(t, f), "{t} {f}");
        }
        for (t, f) in [
            ("function", "name"),
            ("function", "libs"),
            ("inject", "func"),
            ("change", "template"),
            ("template", "func"),
            ("function", "Info"),
            ("", "func"),
        ] {
            assert!(!is_code_field(t, f), "{t} {f}");
        }
    }

    #[test]
    fn info_and_templates_get_line_diffs() {
        let before = json!([
            with(
                with(tab("t1", "F"), "info", json!("# Line\nold")),
                "x",
                json!(1)
            ),
            with(
                node("u", "ui_template", "t1"),
                "format",
                json!("<div>\n</div>")
            )
        ]);
        let after = json!([
            with(
                with(tab("t1", "F"), "info", json!("# Line\nnew")),
                "x",
                json!(1)
            ),
            with(
                node("u", "ui_template", "t1"),
                "format",
                json!("<div>\n<p>hi</p>\n</div>")
            )
        ]);
        let d = diff(before, after);
        assert_eq!(
            d.tabs[0].tab_fields[0].code,
            Some(vec![
                DiffLine::Same("# Line".into()),
                DiffLine::Removed("old".into()),
                DiffLine::Added("new".into())
            ])
        );
        assert_eq!(
            d.tabs[0].changed[0].fields[0].code,
            Some(vec![
                DiffLine::Same("<div>".into()),
                DiffLine::Added("<p>hi</p>".into()),
                DiffLine::Same("</div>".into())
            ])
        );
    }

    #[test]
    fn a_moved_node_is_changed_in_its_new_tab() {
        let before = json!([
            tab("t1", "A"),
            tab("t2", "B"),
            with(node("n", "debug", "t1"), "x", json!(300))
        ]);
        let after = json!([tab("t1", "A"), tab("t2", "B"), node("n", "debug", "t2")]);
        let d = diff(before, after);
        assert_eq!(d.tabs.len(), 1);
        assert_eq!(d.tabs[0].id.as_deref(), Some("t2"));
        assert!(d.tabs[0].added.is_empty() && d.tabs[0].removed.is_empty());
        assert_eq!(field_names(&d.tabs[0].changed[0]), ["z", "position"]);
        let z = &d.tabs[0].changed[0].fields[0];
        assert_eq!(
            (z.before.as_deref(), z.after.as_deref()),
            (Some("\"t1\""), Some("\"t2\""))
        );
    }

    #[test]
    fn position_is_one_field_and_comes_last() {
        let before = json!([with(node("n", "debug", "t"), "active", json!(true))]);
        let after = json!([with(
            with(
                with(node("n", "debug", "t"), "active", json!(false)),
                "x",
                json!(120)
            ),
            "y",
            json!(60)
        )]);
        let d = diff(before, after);
        let change = &d.tabs[0].changed[0];
        assert_eq!(field_names(change), ["active", "position"]);
        assert_eq!(change.fields[1].before.as_deref(), Some("100,40"));
        assert_eq!(change.fields[1].after.as_deref(), Some("120,60"));

        // A group has a size; a position that appears is "absent" before.
        let before =
            json!([{"id": "g", "type": "group", "z": "t", "x": 1, "y": 2, "w": 3, "h": 4}]);
        let after = json!([{"id": "g", "type": "group", "z": "t", "x": 1, "y": 2, "w": 5, "h": 4}]);
        let field = &diff(before, after).tabs[0].changed[0].fields[0];
        assert_eq!(
            (field.before.as_deref(), field.after.as_deref()),
            (Some("1,2,3,4"), Some("1,2,5,4"))
        );
        let before = json!([{"id": "n", "type": "debug", "z": "t"}]);
        let after = json!([{"id": "n", "type": "debug", "z": "t", "x": 7}]);
        let field = &diff(before, after).tabs[0].changed[0].fields[0];
        assert_eq!(
            (
                field.field.as_str(),
                field.before.as_deref(),
                field.after.as_deref()
            ),
            ("position", None, Some("7,-"))
        );
    }

    #[test]
    fn config_nodes_are_global_configuration_listed_last() {
        let before = json!([{"id": "b", "type": "mqtt-broker", "broker": "old"}, tab("t1", "A"), node("n", "debug", "t1")]);
        let after = json!([{"id": "b", "type": "mqtt-broker", "broker": "new"}, tab("t1", "A"), node("n", "debug", "t1"), tab("t2", "B")]);
        let d = diff(before, after);
        assert_eq!(d.tabs.len(), 2);
        assert_eq!(d.tabs[0].id.as_deref(), Some("t2"));
        let global = &d.tabs[1];
        assert_eq!(global.id, None);
        assert_eq!(global.label, GLOBAL_LABEL);
        assert_eq!(global.change, TabChange::Changed);
        assert_eq!(field_names(&global.changed[0]), ["broker"]);
        assert!(render_text(&d).ends_with(
            "global configuration: changed\n  ~ mqtt-broker (b): broker: \"old\" -> \"new\"\n"
        ));
        // An empty z is no tab either.
        let d = diff(json!([]), json!([{"id": "c", "type": "x", "z": ""}]));
        assert_eq!(
            (d.tabs[0].id.clone(), ids(&d.tabs[0].added)),
            (None, vec!["c"])
        );
    }

    #[test]
    fn subflows_are_tabs_and_their_nodes_belong_to_them() {
        let sf = json!({"id": "sf", "type": "subflow", "name": "Scale", "in": [], "out": []});
        let before = json!([
            sf.clone(),
            with(node("f", "function", "sf"), "func", json!("return msg;"))
        ]);
        let after = json!([
            with(sf.clone(), "in", json!([{"x": 1}])),
            with(node("f", "function", "sf"), "func", json!("return null;")),
            node("i", "subflow:sf", "t1"),
            tab("t1", "Main")
        ]);
        let d = diff(before, after);
        assert_eq!(d.tabs.len(), 2);
        let s = &d.tabs[0];
        assert_eq!(
            (s.id.as_deref(), s.label.as_str(), s.change),
            (Some("sf"), "subflow: Scale", TabChange::Changed)
        );
        assert_eq!(
            s.tab_fields
                .iter()
                .map(|f| f.field.as_str())
                .collect::<Vec<_>>(),
            ["in"]
        );
        assert_eq!(field_names(&s.changed[0]), ["func"]);
        assert_eq!(d.tabs[1].change, TabChange::Added);
        assert_eq!(ids(&d.tabs[1].added), ["i"]);
        // Removing the subflow removes its nodes.
        let d = diff(json!([sf, node("f", "function", "sf")]), json!([]));
        assert_eq!(
            (d.tabs[0].change, ids(&d.tabs[0].removed)),
            (TabChange::Removed, vec!["f"])
        );
    }

    #[test]
    fn a_z_that_names_no_tab_is_grouped_by_itself() {
        let before = json!([tab("t1", "A"), tab("t9", "Old")]);
        let after = json!([node("n", "debug", "gone"), tab("t1", "B"), {"id": "c", "type": "cfg"}]);
        let d = diff(before, after);
        let summary: Vec<_> = d
            .tabs
            .iter()
            .map(|t| (t.id.as_deref(), t.label.as_str(), t.change))
            .collect();
        assert_eq!(
            summary,
            [
                (Some("t1"), "B", TabChange::Changed),
                (Some("t9"), "Old", TabChange::Removed),
                (Some("gone"), "unknown tab gone", TabChange::Changed),
                (None, GLOBAL_LABEL, TabChange::Changed),
            ]
        );
    }

    #[test]
    fn an_id_that_turns_from_tab_into_node_is_a_removed_tab_and_an_added_node() {
        let d = diff(
            json!([tab("x", "A"), node("n", "debug", "x")]),
            json!([node("x", "debug", "t")]),
        );
        let summary: Vec<_> = d
            .tabs
            .iter()
            .map(|t| (t.id.as_deref(), t.change, ids(&t.added), ids(&t.removed)))
            .collect();
        assert_eq!(
            summary,
            [
                (Some("x"), TabChange::Removed, vec![], vec!["n"]),
                (Some("t"), TabChange::Changed, vec!["x"], vec![]),
            ]
        );
    }

    #[test]
    fn malformed_flows_are_refused() {
        let good = json!([]);
        for bad in [
            json!({"flows": []}),
            json!(null),
            json!("[]"),
            json!([1]),
            json!([{"type": "tab"}]),
            json!([{"id": 5, "type": "tab"}]),
            json!([{"id": "", "type": "tab"}]),
            json!([{"id": "a", "type": "tab"}, {"id": "a", "type": "debug", "z": "a"}]),
        ] {
            assert_eq!(
                diff_flows(&bad, &good).unwrap_err().code,
                "invalid_flows",
                "{bad}"
            );
            assert_eq!(
                diff_flows(&good, &bad).unwrap_err().code,
                "invalid_flows",
                "{bad}"
            );
        }
        let err = diff_flows(&good, &json!([{"id": "a"}, {"id": "b"}, {"id": "a"}])).unwrap_err();
        assert_eq!(err.message, "entry 2 of the newer flows repeats the id a");
    }

    #[test]
    fn long_code_diffs_are_capped() {
        let old: String = (0..MAX_DIFF_LINES + 10)
            .map(|i| format!("a{i}\n"))
            .collect();
        let new: String = (0..MAX_DIFF_LINES + 10)
            .map(|i| format!("b{i}\n"))
            .collect();
        let lines = line_diff(Some(&old), Some(&new));
        assert_eq!(lines.len(), MAX_DIFF_LINES + 1);
        // 2 * (MAX + 10) changed lines and one common empty last line.
        let more = 2 * (MAX_DIFF_LINES + 10) + 1 - MAX_DIFF_LINES;
        assert_eq!(
            lines.last(),
            Some(&DiffLine::Omitted(format!("... ({more} more lines)")))
        );
        assert!(lines[..MAX_DIFF_LINES]
            .iter()
            .all(|l| !matches!(l, DiffLine::Omitted(_))));

        // Beyond MAX_ALIGNED_LINES, all old lines are removed, then all new added.
        // Common first and last lines do not count; up to the limit the
        // middle is aligned.
        let texts = |n: usize| {
            let body: Vec<String> = (0..n).map(|i| format!("{i}")).collect();
            let body = body.join("\n");
            (
                format!("same\nA\n{body}\nZ\nsame"),
                format!("same\nB\n{body}\nY\nsame"),
            )
        };
        let (old, new) = texts((MAX_ALIGNED_LINES - 4) / 2);
        let lines = line_diff(Some(&old), Some(&new));
        assert_eq!(
            &lines[..3],
            [
                DiffLine::Same("same".into()),
                DiffLine::Removed("A".into()),
                DiffLine::Added("B".into())
            ]
        );
        assert_eq!(lines[3], DiffLine::Same("0".into()));
        let (old, new) = texts((MAX_ALIGNED_LINES - 4) / 2 + 1);
        let lines = line_diff(Some(&old), Some(&new));
        assert_eq!(
            &lines[..3],
            [
                DiffLine::Same("same".into()),
                DiffLine::Removed("A".into()),
                DiffLine::Removed("0".into())
            ]
        );
        assert!(lines[1..].iter().all(|l| !matches!(l, DiffLine::Same(_))));
        assert!(matches!(lines.last(), Some(DiffLine::Omitted(_))));

        let long = "x".repeat(MAX_VALUE_CHARS + 5);
        let shown = shown_value(&json!(long));
        assert!(
            shown.ends_with("… (7 more characters)"),
            "{}",
            &shown[shown.len() - 40..]
        );
        assert_eq!(
            shown.chars().count(),
            MAX_VALUE_CHARS + "… (7 more characters)".chars().count()
        );
    }

    #[test]
    fn rendering_keeps_three_lines_of_context() {
        let old: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
        let mut new = old.clone();
        new[10] = "changed".into();
        let lines = line_diff(Some(&old.join("\n")), Some(&new.join("\n")));
        let mut out = String::new();
        render_lines(&mut out, &lines);
        let expected = "    ...\n      line 7\n      line 8\n      line 9\n    - line 10\n    + changed\n      line 11\n      line 12\n      line 13\n    ...\n";
        assert_eq!(out, expected);
        // Changes 7 lines apart share their context; 8 apart show "..." between.
        for (gap, dots) in [(7, 2), (8, 3)] {
            let mut new = old.clone();
            new[5] = "x".into();
            new[5 + gap] = "y".into();
            let lines = line_diff(Some(&old.join("\n")), Some(&new.join("\n")));
            let mut out = String::new();
            render_lines(&mut out, &lines);
            assert_eq!(out.matches("    ...\n").count(), dots, "{out}");
        }
    }

    #[test]
    fn rendering_escapes_control_characters() {
        let before = json!([with(
            node("f", "function", "t\u{1b}[2J"),
            "func",
            json!("a")
        )]);
        let after = json!([with(
            with(
                node("f", "function", "t\u{1b}[2J"),
                "func",
                json!("a\u{1b}]0;owned\u{7}\r")
            ),
            "name",
            json!("n\u{1b}")
        )]);
        let text = render_text(&diff(before, after));
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\r'),
            "{text}"
        );
        assert!(text.contains("\\u{1b}"), "{text}");
    }

    /// A small random flows array: tabs t0..t2 (some subflows), nodes
    /// n0..n7 in them or global, with code, names and positions.
    fn flows() -> impl Strategy<Value = Value> {
        let tab = (any::<bool>(), any::<bool>(), "[a-c]{0,2}");
        let node = (
            any::<bool>(),
            prop::sample::select(vec!["function", "debug", "inject", "template"]),
            prop::option::of(prop::sample::select(vec!["t0", "t1", "t2", "zz"])),
            prop::collection::vec("[a-c]{0,2}", 0..5),
            0i64..3,
            prop::option::of("[a-b]{1,2}"),
        );
        (
            prop::collection::vec(tab, 3),
            prop::collection::vec(node, 8),
        )
            .prop_map(|(tabs, nodes)| {
                let mut out = Vec::new();
                for (i, (present, subflow, label)) in tabs.into_iter().enumerate() {
                    if present {
                        let kind = if subflow { "subflow" } else { "tab" };
                        out.push(json!({"id": format!("t{i}"), "type": kind, "label": label}));
                    }
                }
                for (i, (present, kind, z, code, x, name)) in nodes.into_iter().enumerate() {
                    if present {
                        let mut n = json!({"id": format!("n{i}"), "type": kind, "func": code.join("\n"), "x": x});
                        if let Some(z) = z {
                            n["z"] = json!(z);
                        }
                        if let Some(name) = name {
                            n["name"] = json!(name);
                        }
                        out.push(n);
                    }
                }
                Value::Array(out)
            })
    }

    fn entries(flows: &Value) -> HashMap<String, Value> {
        flows
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
            .collect()
    }

    proptest! {
        #[test]
        fn a_flow_has_no_diff_with_itself(a in flows()) {
            prop_assert!(diff_flows(&a, &a).unwrap().is_empty());
        }

        /// Every node gone is removed, every node new is added, every node
        /// that differs is changed, each exactly once, and nothing else.
        #[test]
        fn every_node_is_accounted_for_once(a in flows(), b in flows()) {
            let d = diff_flows(&a, &b).unwrap();
            let (old, new) = (entries(&a), entries(&b));
            let node = |e: &Value| !matches!(e["type"].as_str(), Some("tab" | "subflow"));
            let mut removed: Vec<&str> = d.tabs.iter().flat_map(|t| ids(&t.removed)).collect();
            let mut added: Vec<&str> = d.tabs.iter().flat_map(|t| ids(&t.added)).collect();
            let mut changed: Vec<&str> = d.tabs.iter().flat_map(|t| t.changed.iter().map(|c| c.node.id.as_str())).collect();
            let expect = |pick: &dyn Fn(&str) -> bool| {
                let mut v: Vec<&str> = old.keys().chain(new.keys()).map(String::as_str).filter(|id| pick(id)).collect::<BTreeSet<_>>().into_iter().collect();
                v.sort_unstable();
                v
            };
            let is_node = |side: &HashMap<String, Value>, id: &str| side.get(id).is_some_and(node);
            removed.sort_unstable();
            added.sort_unstable();
            changed.sort_unstable();
            prop_assert_eq!(removed, expect(&|id| is_node(&old, id) && !is_node(&new, id)));
            prop_assert_eq!(added, expect(&|id| is_node(&new, id) && !is_node(&old, id)));
            prop_assert_eq!(changed, expect(&|id| is_node(&old, id) && is_node(&new, id) && old[id] != new[id]));
            // Removed nodes sit under their old tab, the rest under their new one.
            for t in &d.tabs {
                let z = |e: &Value| e["z"].as_str().filter(|z| !z.is_empty()).map(str::to_string);
                for n in &t.removed {
                    prop_assert_eq!(&z(&old[&n.id]), &t.id);
                }
                for n in t.added.iter().chain(t.changed.iter().map(|c| &c.node)) {
                    prop_assert_eq!(&z(&new[&n.id]), &t.id);
                }
            }
            // The global configuration, if listed, is last; no tab twice.
            let tab_ids: Vec<_> = d.tabs.iter().map(|t| t.id.clone()).collect();
            prop_assert_eq!(tab_ids.iter().collect::<HashSet<_>>().len(), tab_ids.len());
            prop_assert!(tab_ids.iter().rev().skip(1).all(Option::is_some));
            // The text names every listed node.
            let text = render_text(&d);
            for id in d.tabs.iter().flat_map(|t| ids(&t.added).into_iter().chain(ids(&t.removed))) {
                let needle = format!("({id})\n");
                prop_assert!(text.contains(&needle));
            }
        }

        /// A line diff holds both texts: its same and removed lines are the
        /// old text, its same and added lines the new one.
        #[test]
        fn line_diffs_hold_both_texts(old in prop::option::of(prop::collection::vec("[a-c]{0,2}", 0..12)), new in prop::option::of(prop::collection::vec("[a-c]{0,2}", 0..12))) {
            let (old, new) = (old.map(|l| l.join("\n")), new.map(|l| l.join("\n")));
            let lines = line_diff(old.as_deref(), new.as_deref());
            let side = |keep: fn(&DiffLine) -> Option<&String>| -> Option<String> {
                let kept: Vec<&str> = lines.iter().filter_map(keep).map(String::as_str).collect();
                (!kept.is_empty()).then(|| kept.join("\n"))
            };
            let was = side(|l| match l { DiffLine::Same(t) | DiffLine::Removed(t) => Some(t), _ => None });
            let is = side(|l| match l { DiffLine::Same(t) | DiffLine::Added(t) => Some(t), _ => None });
            prop_assert_eq!(was, old);
            prop_assert_eq!(is, new);
        }
    }
}
