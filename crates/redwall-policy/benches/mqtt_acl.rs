//! How long one MQTT ACL decision takes on each publish: a client with 10
//! ordered rules (the last one allowing), over topics of 3 to 5 levels.
//! Run: `cargo bench -p redwall-policy --bench mqtt_acl`. Prints the median
//! of 7 runs of 1,000,000 decisions each.

use redwall_policy::mqtt_acl::{decide, AclRule, Action, Actions, Effect};
use std::hint::black_box;

mod timing;

fn main() {
    let mut rules: Vec<AclRule> = (0..9)
        .map(|i| AclRule {
            effect: Effect::Deny,
            actions: Actions::Both,
            filter: format!("plant/line{i}/secret/#"),
        })
        .collect();
    rules.push(AclRule {
        effect: Effect::Allow,
        actions: Actions::Publish,
        filter: "plant/+/sensors/#".into(),
    });
    let topics = [
        "plant/line3/sensors/temp",
        "plant/line7/sensors/pressure/raw",
        "plant/line1/sensors/flow",
        "plant/line9/sensors/temp/avg/1m",
    ];
    let (ns, allowed) = timing::median_ns_per_call(|i| {
        let topic = topics[i % topics.len()];
        decide(black_box(&rules), Action::Publish, black_box(topic)) == Effect::Allow
    });
    assert_eq!(
        allowed,
        timing::CALLS,
        "every topic is allowed by the last rule"
    );
    println!(
        "mqtt acl decide, publish, 10 rules (allowed by the last): {:.1} ns per decision (median of 7 x 1,000,000)",
        ns
    );
}
