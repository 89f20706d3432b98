//! How long the snapshot diff takes for two 1,000-node flows (10 tabs of
//! 20 chains of 5 nodes; between them a tenth of the function nodes have
//! new code, 20 nodes moved, 10 removed and 10 added).
//! Run: `cargo bench -p redwall-policy --bench flow_diff`. Prints the
//! median of 101 diffs, in milliseconds.

#![allow(clippy::expect_used, clippy::print_stdout)]

use redwall_policy::flow_diff::diff_flows;
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Instant;

fn flows(changed: bool) -> Value {
    let mut nodes = Vec::new();
    for t in 0..10 {
        let tab = format!("tab{t}");
        nodes.push(json!({"id": tab, "type": "tab", "label": format!("Line {t}")}));
        for c in 0..20 {
            let id = |k: usize| format!("{tab}n{c}x{k}");
            let y = 40 + c * 40;
            let new_code = changed && c % 10 == 3;
            let code = if new_code {
                format!("// chain {c}\nconst k = {c} * 2;\nmsg.payload = 'Howdy ' + (msg.payload * k);\nreturn msg;")
            } else {
                format!("// chain {c}\nconst k = {c};\nmsg.payload = 'Hello ' + (msg.payload * k);\nreturn msg;")
            };
            let x = if changed && c == 7 { 130 } else { 100 };
            // The last chain of each tab: its debug node replaced by another.
            let last = if changed && c == 19 {
                format!("{tab}n{c}new")
            } else {
                id(4)
            };
            nodes.push(json!({"id": id(0), "type": "inject", "z": tab, "payloadType": "date", "x": x, "y": y, "wires": [[id(1)]]}));
            nodes.push(json!({"id": id(1), "type": "function", "z": tab, "name": format!("scale {c}"), "func": code, "outputs": 1, "x": 260, "y": y, "wires": [[id(2)]]}));
            nodes.push(json!({"id": id(2), "type": "change", "z": tab, "rules": [{"t": "set", "p": "topic", "pt": "msg", "to": format!("line/{t}/{c}"), "tot": "str"}], "x": 420, "y": y, "wires": [[id(3)]]}));
            nodes.push(json!({"id": id(3), "type": "switch", "z": tab, "property": "payload", "rules": [{"t": "nnull"}], "outputs": 1, "x": 560, "y": y, "wires": [[last.clone()]]}));
            nodes.push(json!({"id": last, "type": "debug", "z": tab, "active": false, "x": 700, "y": y, "wires": []}));
        }
    }
    Value::Array(nodes)
}

fn main() {
    let before = flows(false);
    let after = flows(true);
    let count = |v: &Value| {
        v.as_array()
            .map_or(0, |a| a.iter().filter(|n| n["type"] != "tab").count())
    };
    assert_eq!((count(&before), count(&after)), (1000, 1000));
    let first = diff_flows(&before, &after).expect("the flows diff");
    assert!(!first.is_empty(), "the bench measured a diff with changes");
    let mut runs: Vec<f64> = (0..101)
        .map(|_| {
            let start = Instant::now();
            let d = diff_flows(black_box(&before), black_box(&after)).expect("the flows diff");
            black_box(d);
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    println!(
        "flow_diff: two 1,000-node flows, median {:.2} ms (min {:.2}, max {:.2}) over {} runs",
        runs[runs.len() / 2],
        runs[0],
        runs[runs.len() - 1],
        runs.len()
    );
}
