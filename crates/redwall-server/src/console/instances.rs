//! Instance pages: create, here or on one of the team's remote agents;
//! status and start/stop/restart; live logs; the editor link; environment
//! and secrets (write-only); HTTP route rules with a "test a request"
//! helper; instance API keys; options; delete.
//!
//! An instance on a remote agent has no start/stop/restart, logs,
//! environment or options here: its process, environment and network are
//! the site's (the API answers `instance_on_agent`); its page says so and
//! links to the team's agents page. Its route rules, API keys and editor
//! work as for any instance.

use super::auth::FieldErrors;
use super::form::Form;
use super::models::{Instance, Team};
use super::page::{refused_status, render, render_status, see_other, Ctx, Layout, Me};
use super::submit::{self, Done, Posted};
use crate::api::agents::AgentView;
use askama::Template;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use redwall_policy::agent_protocol::check_agent_name;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
pub struct LogLine {
    pub at: String,
    pub stream: String,
    pub text: String,
}

#[derive(Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub secret: bool,
    #[serde(default)]
    pub value: Option<String>,
    pub updated_at: String,
}

#[derive(Deserialize)]
pub struct Rule {
    pub path_prefix: String,
    #[serde(default)]
    pub methods: Vec<String>,
    pub policy: Value,
    #[serde(default)]
    pub client_ranges: Vec<String>,
}

impl Rule {
    pub fn policy_type(&self) -> &str {
        self.policy
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn min_role(&self) -> &str {
        self.policy
            .get("min_role")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn summary(&self) -> String {
        let who = match self.policy_type() {
            "public" => "anyone".to_string(),
            "session" => format!("console session, {} or above", self.min_role()),
            "api_key" => "an instance API key".to_string(),
            "basic" => format!("basic auth, {} or above", self.min_role()),
            other => other.to_string(),
        };
        let methods = if self.methods.is_empty() {
            "any method".to_string()
        } else {
            self.methods.join(", ")
        };
        format!("{} ({methods}): {who}", self.path_prefix)
    }
}

#[derive(Deserialize)]
pub struct Key {
    pub id: String,
    pub name: String,
    pub prefix: String,
    #[serde(default)]
    pub path_prefix: Option<String>,
    pub created_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub last_used_at: Option<String>,
}

#[derive(Deserialize)]
struct CreatedKey {
    key: String,
}

#[derive(Deserialize)]
struct TestAnswer {
    decision: String,
    matched_rule: Option<usize>,
}

/// The "test a request" helper's answer, in words.
pub struct TestOutcome {
    pub allowed: bool,
    pub headline: String,
    pub why: String,
}

/// What the test form held, kept for the next render.
#[derive(Default)]
pub struct TestInput {
    pub method: String,
    pub path: String,
    pub client_ip: String,
    pub credential: String,
    pub role: String,
}

/// One of the team's agents the new-instance form offers to run it on.
pub struct AgentChoice {
    pub name: String,
    /// What the list says of it besides its name: offline, or the
    /// instance it runs already.
    pub note: String,
}

#[derive(Template)]
#[template(path = "console/instance_new.html")]
struct NewInstancePage {
    layout: Layout,
    team: Team,
    instance_name: String,
    start: bool,
    /// The team's agents that are not revoked; empty (and no choice shown)
    /// when there are none or the caller may not list them.
    agents: Vec<AgentChoice>,
    /// The agent chosen; empty for this hub.
    agent: String,
    errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "console/instance.html")]
struct InstancePage {
    layout: Layout,
    team: Team,
    instance: Instance,
    logs: Vec<LogLine>,
    env: Vec<EnvVar>,
    rules: Vec<Rule>,
    keys: Vec<Key>,
    errors: FieldErrors,
    /// A key just created, shown this once.
    new_key: Option<String>,
    test: Option<TestOutcome>,
    test_input: TestInput,
}

fn instance_api(team: &str, instance: &str) -> String {
    format!("/api/v1/teams/{team}/instances/{instance}")
}

fn page_path(team: &str, instance: &str) -> String {
    format!("/teams/{team}/instances/{instance}")
}

fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "created" => "The instance was created.",
        "env_saved" => "The environment was saved. It takes effect at the next start.",
        "routes_saved" => "The route rules were saved. They apply to the next request.",
        "key_revoked" => "The key was revoked.",
        "options_saved" => "The options were saved. They take effect at the next start.",
        other => return super::home::notice(Some(other)),
    })
}

// ---- create ----

/// The signed-in caller and the team, or the page that says why not.
pub(super) async fn team_of(ctx: &Ctx, team: &str) -> Result<(Me, Team), Response> {
    let me = ctx.me().await?;
    match ctx.api.get::<Team>(&format!("/api/v1/teams/{team}")).await {
        Ok(t) => Ok((me, t)),
        Err(f) => Err(ctx.refused(&f, Some(&me))),
    }
}

/// The team's agents an instance may be put on: not revoked, by name,
/// each with what it runs already. None unless the caller may make one
/// (an Owner's choice: it opens a site's Node-RED to the team).
async fn agent_choices(ctx: &Ctx, team: &Team) -> Vec<AgentChoice> {
    if !team.can("agent:manage") {
        return Vec::new();
    }
    let team = &team.id;
    let agents_path = format!("/api/v1/teams/{team}/agents");
    let instances_path = format!("/api/v1/teams/{team}/instances");
    let (agents, instances) = futures::join!(
        ctx.api.get::<Vec<AgentView>>(&agents_path),
        ctx.api.get::<Vec<Instance>>(&instances_path),
    );
    let instances = instances.unwrap_or_default();
    let mut choices: Vec<AgentChoice> = agents
        .unwrap_or_default()
        .into_iter()
        .filter(|a| !a.revoked)
        .map(|a| {
            let runs = instances
                .iter()
                .find(|i| i.agent.as_deref() == Some(a.name.as_str()));
            let note = match (runs, a.online) {
                (Some(i), _) => format!("runs {} already", i.name),
                (None, false) => "offline".to_string(),
                (None, true) => String::new(),
            };
            AgentChoice { name: a.name, note }
        })
        .collect();
    choices.sort_by(|a, b| a.name.cmp(&b.name));
    choices
}

pub async fn new_page(ctx: Ctx, Path(team): Path<String>) -> Response {
    let (me, team) = match team_of(&ctx, &team).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let agents = agent_choices(&ctx, &team).await;
    render(&NewInstancePage {
        layout: Layout::new("New instance", Some(&me), "home"),
        team,
        instance_name: String::new(),
        start: true,
        agents,
        agent: String::new(),
        errors: FieldErrors::default(),
    })
}

const NO_SUCH_AGENT: &str = "The team has no agent of that name.";

/// A refusal of the new-instance form, next to the field it concerns.
fn create_errors(f: &super::client::Failure, on_agent: bool) -> FieldErrors {
    if on_agent && f.status == StatusCode::NOT_FOUND {
        return FieldErrors {
            form: None,
            fields: vec![("agent", NO_SUCH_AGENT.into())],
        };
    }
    FieldErrors::from_failure(
        f,
        &[
            ("invalid_name", "name"),
            ("name_taken", "name"),
            ("too_many_instances", "name"),
            ("agent_runs_instance", "agent"),
            ("agent_revoked", "agent"),
            ("agent_without_key", "agent"),
        ],
    )
}

pub async fn create(ctx: Ctx, Path(team_id): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    let (me, team) = match team_of(ctx, &team_id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    submit::signed_in(ctx, body, |p: Posted| async move {
        let name = p.form.text("name");
        let start = p.form.checked("start");
        // "Runs on": empty for this hub, else an agent's name. Node-RED on
        // an agent runs whenever its agent runs it: no start is sent.
        let agent = p.form.text("agent");
        let created = if agent.is_empty() {
            let path = format!("/api/v1/teams/{team_id}/instances");
            let request = json!({ "name": name, "start": start });
            p.api.post::<Instance>(Method::POST, &path, &request).await
        } else if check_agent_name(&agent).is_err() {
            // Not a name any agent has: not put into a path.
            Err(super::client::Failure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                NO_SUCH_AGENT,
            ))
        } else {
            let path = format!("/api/v1/teams/{team_id}/agents/{agent}/instance");
            let request = json!({ "name": name });
            p.api.post::<Instance>(Method::POST, &path, &request).await
        };
        match created {
            Ok(i) => Done::Redirect(format!("{}?done=created", page_path(&team_id, &i.id))),
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, Some(&me))),
            Err(f) => {
                let errors = create_errors(&f, !agent.is_empty());
                let agents = agent_choices(ctx, &team).await;
                Done::Again(render_status(
                    refused_status(f.status),
                    &NewInstancePage {
                        layout: Layout::new("New instance", Some(&me), "home"),
                        team,
                        instance_name: name,
                        start,
                        agents,
                        agent,
                        errors,
                    },
                ))
            }
        }
    })
    .await
}

// ---- the instance page ----

struct Extra {
    errors: FieldErrors,
    new_key: Option<String>,
    test: Option<TestOutcome>,
    test_input: TestInput,
}

impl Extra {
    fn none() -> Extra {
        Extra {
            errors: FieldErrors::default(),
            new_key: None,
            test: None,
            test_input: TestInput {
                method: "GET".into(),
                path: "/".into(),
                ..TestInput::default()
            },
        }
    }

    fn error(f: &super::client::Failure, fields: &[(&str, &'static str)]) -> Extra {
        Extra {
            errors: FieldErrors::from_failure(f, fields),
            ..Extra::none()
        }
    }
}

async fn instance_page(
    ctx: &Ctx,
    team_id: &str,
    instance_id: &str,
    extra: Extra,
    status: StatusCode,
) -> Response {
    let (me, team) = match team_of(ctx, team_id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let base = instance_api(team_id, instance_id);
    let instance = match ctx.api.get::<Instance>(&base).await {
        Ok(i) => i,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let (logs_path, env_path, routes_path, keys_path) = (
        format!("{base}/logs?lines=200"),
        format!("{base}/env"),
        format!("{base}/routes"),
        format!("{base}/keys"),
    );
    // An instance on an agent has no logs or environment here: they are
    // the site's.
    let here = instance.agent.is_none();
    let (logs, env, rules, keys) = futures::join!(
        async {
            match here {
                true => ctx.api.get::<Vec<LogLine>>(&logs_path).await.ok(),
                false => None,
            }
        },
        async {
            match here {
                true => ctx.api.get::<Vec<EnvVar>>(&env_path).await.ok(),
                false => None,
            }
        },
        ctx.api.get::<Vec<Rule>>(&routes_path),
        ctx.api.get::<Vec<Key>>(&keys_path),
    );
    let layout = Layout::new(instance.name.clone(), Some(&me), "home")
        .with_notice(notice(ctx.query_param("done").as_deref()));
    render_status(
        status,
        &InstancePage {
            layout,
            team,
            instance,
            logs: logs.unwrap_or_default(),
            env: env.unwrap_or_default(),
            rules: rules.unwrap_or_default(),
            keys: keys.unwrap_or_default(),
            errors: extra.errors,
            new_key: extra.new_key,
            test: extra.test,
            test_input: extra.test_input,
        },
    )
}

pub async fn page(ctx: Ctx, Path((team, instance)): Path<(String, String)>) -> Response {
    instance_page(&ctx, &team, &instance, Extra::none(), StatusCode::OK).await
}

/// Every form on the instance page posts to `{page}/{action}`.
pub async fn action(
    ctx: Ctx,
    Path((team, instance, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let ctx = &ctx;
    let base = instance_api(&team, &instance);
    let here = page_path(&team, &instance);
    let (team, instance) = (team.as_str(), instance.as_str());
    submit::signed_in(ctx, body, |p: Posted| async move {
        let again = |extra: Extra, status: StatusCode| async move {
            let status = refused_status(status);
            Done::Again(instance_page(ctx, team, instance, extra, status).await)
        };
        let back_home = p.form.text("back") == "home";
        match action.as_str() {
            "start" | "stop" | "restart" => {
                let path = format!("{base}/{action}");
                match p.api.act(Method::POST, &path, None).await {
                    Ok(_) => {
                        let done = match action.as_str() {
                            "start" => "started",
                            "stop" => "stopped",
                            _ => "restarted",
                        };
                        if back_home {
                            Done::Redirect(format!("/?done={done}"))
                        } else {
                            Done::Redirect(format!("{here}?done={done}"))
                        }
                    }
                    Err(f) if back_home && !f.needs_login() => {
                        Done::Again(super::page::error_page(&f, None))
                    }
                    Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
                    Err(f) => again(Extra::error(&f, &[]), f.status).await,
                }
            }
            "delete" => {
                let body = json!({ "confirm_name": p.form.text("confirm_name") });
                match p.api.act(Method::DELETE, &base, Some(&body)).await {
                    Ok(_) => Done::Redirect(format!("/teams/{team}?done=instance_deleted")),
                    Err(f) => {
                        again(
                            Extra::error(&f, &[("confirmation_mismatch", "confirm_name")]),
                            f.status,
                        )
                        .await
                    }
                }
            }
            "env" => match p
                .api
                .act(Method::PUT, &format!("{base}/env"), Some(&env_from(&p)))
                .await
            {
                Ok(_) => Done::Redirect(format!("{here}?done=env_saved#env")),
                Err(f) => again(Extra::error(&f, &[]), f.status).await,
            },
            "routes" => match p
                .api
                .act(
                    Method::PUT,
                    &format!("{base}/routes"),
                    Some(&rules_from(&p)),
                )
                .await
            {
                Ok(_) => Done::Redirect(format!("{here}?done=routes_saved#routes")),
                Err(f) => again(Extra::error(&f, &[]), f.status).await,
            },
            "routes-test" => {
                let input = TestInput {
                    method: p.form.text("method").to_ascii_uppercase(),
                    path: p.form.text("path"),
                    client_ip: p.form.text("client_ip"),
                    credential: p.form.text("credential"),
                    role: p.form.text("role"),
                };
                let mut req = json!({ "method": input.method, "path": input.path });
                if !input.client_ip.is_empty() {
                    req["client_ip"] = json!(input.client_ip);
                }
                if !input.credential.is_empty() {
                    req["credential"] = json!(input.credential);
                }
                if !input.role.is_empty() {
                    req["role"] = json!(input.role);
                }
                if let Some(k) = p.form.optional("api_key") {
                    req["api_key"] = json!(k);
                }
                let result = p
                    .api
                    .post::<TestAnswer>(Method::POST, &format!("{base}/routes/test"), &req)
                    .await;
                let rules = p
                    .api
                    .get::<Vec<Rule>>(&format!("{base}/routes"))
                    .await
                    .unwrap_or_default();
                let extra = match result {
                    Ok(a) => Extra {
                        test: Some(explain(&a, &rules)),
                        test_input: input,
                        ..Extra::none()
                    },
                    Err(f) => Extra {
                        errors: FieldErrors::from_failure(
                            &f,
                            &[("invalid_path", "path"), ("invalid_client_ip", "client_ip")],
                        ),
                        test_input: input,
                        ..Extra::none()
                    },
                };
                // Nothing changed: the same form may be sent again.
                Done::Again(instance_page(ctx, team, instance, extra, StatusCode::OK).await)
            }
            "keys" => {
                let mut req = json!({ "name": p.form.text("key_name") });
                if let Some(days) = p.form.optional("key_days") {
                    match days.parse::<i64>() {
                        Ok(d) => req["expires_in_days"] = json!(d),
                        Err(_) => {
                            let mut extra = Extra::none();
                            extra
                                .errors
                                .fields
                                .push(("key_days", "Enter a whole number of days.".into()));
                            return again(extra, StatusCode::UNPROCESSABLE_ENTITY).await;
                        }
                    }
                }
                if let Some(prefix) = p.form.optional("key_path") {
                    req["path_prefix"] = json!(prefix);
                }
                match p
                    .api
                    .post::<CreatedKey>(Method::POST, &format!("{base}/keys"), &req)
                    .await
                {
                    Ok(k) => {
                        let extra = Extra {
                            new_key: Some(k.key),
                            ..Extra::none()
                        };
                        Done::ShownOnce {
                            page: instance_page(ctx, team, instance, extra, StatusCode::OK).await,
                            then: format!("{here}#keys"),
                        }
                    }
                    Err(f) => {
                        again(
                            Extra::error(
                                &f,
                                &[
                                    ("invalid_name", "key_name"),
                                    ("invalid_expiry", "key_days"),
                                    ("invalid_path_prefix", "key_path"),
                                ],
                            ),
                            f.status,
                        )
                        .await
                    }
                }
            }
            "keys-revoke" => {
                let id = p.form.text("id");
                if !crate::ids::looks_like_id(&id) {
                    return Done::Again(see_other(&here));
                }
                match p
                    .api
                    .act(Method::DELETE, &format!("{base}/keys/{id}"), None)
                    .await
                {
                    Ok(_) => Done::Redirect(format!("{here}?done=key_revoked#keys")),
                    Err(f) => again(Extra::error(&f, &[]), f.status).await,
                }
            }
            "options" => {
                let options = json!({
                    "allow_palette_install": p.form.checked("allow_palette_install"),
                    "allow_function_modules": p.form.checked("allow_function_modules"),
                });
                match p
                    .api
                    .act(Method::PUT, &format!("{base}/options"), Some(&options))
                    .await
                {
                    Ok(_) => Done::Redirect(format!("{here}?done=options_saved#options")),
                    Err(f) => again(Extra::error(&f, &[]), f.status).await,
                }
            }
            _ => Done::Again(super::page::error_page(
                &super::client::Failure::not_found(),
                None,
            )),
        }
    })
    .await
}

/// The environment table as the API's list. A secret left empty keeps its
/// stored value (the API never hands it back to fill the field in).
fn env_from(p: &Posted) -> Value {
    let names = Form::all(&p.body, "env_name");
    let kinds = Form::all(&p.body, "env_kind");
    let values = form_urlencoded::parse(&p.body)
        .filter(|(k, _)| k == "env_value")
        .map(|(_, v)| v.into_owned())
        .collect::<Vec<_>>();
    let existing = Form::all(&p.body, "env_existing");
    let mut list = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let kind = kinds.get(i).map(String::as_str).unwrap_or("plain");
        if name.is_empty() || kind == "remove" {
            continue;
        }
        let value = values.get(i).cloned().unwrap_or_default();
        // A secret's field is always shown empty: left empty, it means
        // "keep", even when the row is turned plain (the API then asks for
        // a value instead of revealing the stored one).
        let was_secret = existing.get(i).is_some_and(|e| e == "secret");
        let secret = kind == "secret";
        let value = if was_secret && value.is_empty() {
            Value::Null
        } else {
            json!(value)
        };
        list.push(json!({ "name": name, "secret": secret, "value": value }));
    }
    Value::Array(list)
}

/// The rules table as the API's list, in the order given by the position
/// column; a row with no path prefix is dropped.
fn rules_from(p: &Posted) -> Value {
    let col = |name| Form::all(&p.body, name);
    let (paths, methods, policies, roles, ranges, orders) = (
        col("rule_path"),
        col("rule_methods"),
        col("rule_policy"),
        col("rule_role"),
        col("rule_ranges"),
        col("rule_order"),
    );
    let split = |s: Option<&String>| -> Vec<String> {
        s.map(|s| {
            s.split([',', ' ', '\n'])
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
    };
    let mut rows = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        if path.is_empty() {
            continue;
        }
        let policy_type = policies.get(i).map(String::as_str).unwrap_or("");
        let mut policy = json!({ "type": policy_type });
        if matches!(policy_type, "session" | "basic") {
            policy["min_role"] = json!(roles.get(i).map(String::as_str).unwrap_or("viewer"));
        }
        let order = orders
            .get(i)
            .and_then(|o| o.parse::<f64>().ok())
            .unwrap_or(i as f64 + 1.0);
        let methods: Vec<String> = split(methods.get(i))
            .into_iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        rows.push((
            order,
            i,
            json!({
                "path_prefix": path,
                "methods": methods,
                "policy": policy,
                "client_ranges": split(ranges.get(i)),
            }),
        ));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    Value::Array(rows.into_iter().map(|r| r.2).collect())
}

fn explain(a: &TestAnswer, rules: &[Rule]) -> TestOutcome {
    let rule = a
        .matched_rule
        .and_then(|i| rules.get(i).map(|r| (i + 1, r.summary())));
    let matched = match &rule {
        Some((n, s)) => format!("Rule {n} matched: {s}."),
        None => "No rule matched.".to_string(),
    };
    let (allowed, headline, because) = match a.decision.as_str() {
        "allow" => (true, "Allowed", "the request meets the rule"),
        "no_rule" => (
            false,
            "Denied",
            "a path that no rule covers is denied by default",
        ),
        "address_refused" => (
            false,
            "Denied (403)",
            "the client address is outside the team's or the rule's ranges",
        ),
        "credential_missing" => (
            false,
            "Denied (401)",
            "the rule needs a credential the request does not carry",
        ),
        "credential_invalid" => (
            false,
            "Denied (401)",
            "the credential is wrong, revoked or expired",
        ),
        "forbidden" => (
            false,
            "Denied (403)",
            "the credential is valid but its role is below the rule's minimum",
        ),
        _ => (false, "Denied", "the request does not meet the rule"),
    };
    TestOutcome {
        allowed,
        headline: headline.to_string(),
        why: format!(
            "{matched} {}.",
            super::auth::sentence(because).trim_end_matches('.')
        ),
    }
}
