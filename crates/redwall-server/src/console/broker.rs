//! The team broker page: the team's MQTT clients and their ordered topic
//! rules, who may publish and who may subscribe on each filter they name
//! (`redwall_policy::mqtt_view`), and how to connect. Members and Owners
//! create clients, change their rules, rotate and revoke them, through the
//! API's `/api/v1/teams/{team}/broker/clients` like every console form. A
//! new password is shown once, in the answer to the form that made it:
//! never in a URL, a cookie or the double-submit memory, which keeps only
//! where a second submit goes.

use super::auth::{describe, sentence, FieldErrors};
use super::client::Failure;
use super::models::{Instance, Team};
use super::page::{error_page, refused_status, render_status, Ctx, Layout};
use super::submit::{self, Done, Posted};
use crate::api::broker::{BrokerClientView, BrokerCredentials};
use askama::Template;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use redwall_policy::mqtt_acl::{check_rules, AclRule};
use redwall_policy::mqtt_view::{self, FilterAccess, RuleLine};
use serde_json::json;
use std::collections::HashMap;

/// One client as the page lists it.
pub struct ClientRow {
    /// Also its MQTT username.
    pub id: String,
    /// Its name, or "instance: NAME" for an instance's own identity.
    pub label: String,
    pub is_instance: bool,
    /// Its rules in order, one line each.
    pub rules: Vec<String>,
    /// The edit form's text: the stored rules, or what was typed when
    /// saving them was refused.
    pub rules_text: String,
    /// Why saving its rules was refused.
    pub error: Option<String>,
    /// Refused at login until enabled again.
    pub disabled: bool,
}

/// A password shown this once.
pub struct Shown {
    pub label: String,
    pub username: String,
    pub password: String,
    pub rotated: bool,
}

/// Where clients connect, as this server runs.
pub struct Connect {
    /// The broker listens (it may be off, or failed to start).
    pub running: bool,
    pub plain: Vec<String>,
    pub tls: Option<String>,
    pub websocket: String,
}

#[derive(Template)]
#[template(path = "console/team_broker.html")]
struct BrokerPage {
    layout: Layout,
    team: Team,
    clients: Vec<ClientRow>,
    who_may: Vec<FilterAccess>,
    connect: Connect,
    /// The create form's messages, and one for the whole page.
    errors: FieldErrors,
    new_name: String,
    new_rules: String,
    shown: Option<Shown>,
}

/// What a form's answer adds to the page.
#[derive(Default)]
struct Extra {
    errors: FieldErrors,
    new_name: String,
    new_rules: String,
    /// A refused rules edit: the client, what was typed, why.
    edit: Option<(String, String, String)>,
    shown: Option<Shown>,
}

fn clients_api(team: &str) -> String {
    format!("/api/v1/teams/{team}/broker/clients")
}

fn page_path(team: &str) -> String {
    format!("/teams/{team}/broker")
}

fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "rules_saved" => "The rules were saved. The client's open connections were closed; they apply when it connects again.",
        "client_revoked" => "The client was revoked and its connections were closed.",
        "client_disabled" => "The client was disabled: it is refused at login and its connections were closed.",
        "client_enabled" => "The client was enabled again.",
        other => return super::home::notice(Some(other)),
    })
}

fn label(c: &BrokerClientView, instances: &HashMap<String, String>) -> String {
    match &c.instance_id {
        Some(id) => {
            let name = instances.get(id).cloned().unwrap_or_else(|| {
                c.name
                    .strip_prefix("instance:")
                    .unwrap_or(&c.name)
                    .to_string()
            });
            format!("instance: {name}")
        }
        None => c.name.clone(),
    }
}

fn connect(ctx: &Ctx) -> Connect {
    let https = ctx.client().https;
    let authority = crate::net::authority::of(&ctx.headers).unwrap_or("localhost");
    let host = crate::net::authority::host_name(&ctx.headers).unwrap_or_else(|| "localhost".into());
    let websocket = format!("{}://{authority}/mqtt", if https { "wss" } else { "ws" });
    match ctx.console.app.broker.get() {
        Some(broker) => Connect {
            running: true,
            plain: broker
                .plain_addrs()
                .iter()
                .take(1)
                .map(|a| format!("mqtt://{a}"))
                .collect(),
            tls: broker.tls_addr().map(|a| {
                if a.ip().is_unspecified() {
                    format!("mqtts://{host}:{}", a.port())
                } else {
                    format!("mqtts://{a}")
                }
            }),
            websocket,
        },
        None => Connect {
            running: false,
            plain: Vec::new(),
            tls: None,
            websocket,
        },
    }
}

async fn broker_page(ctx: &Ctx, team_id: &str, extra: Extra, status: StatusCode) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let team = match ctx
        .api
        .get::<Team>(&format!("/api/v1/teams/{team_id}"))
        .await
    {
        Ok(t) => t,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let listed = match ctx
        .api
        .get::<Vec<BrokerClientView>>(&clients_api(team_id))
        .await
    {
        Ok(c) => c,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let instances: HashMap<String, String> = if listed.iter().any(|c| c.instance_id.is_some()) {
        ctx.api
            .get::<Vec<Instance>>(&format!("/api/v1/teams/{team_id}/instances"))
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|i| (i.id, i.name))
            .collect()
    } else {
        HashMap::new()
    };
    let mut clients: Vec<ClientRow> = listed
        .iter()
        .map(|c| {
            let rules: Vec<String> = c.rules.iter().map(mqtt_view::rule_line).collect();
            let (rules_text, error) = match &extra.edit {
                Some((id, typed, why)) if *id == c.id => (typed.clone(), Some(why.clone())),
                _ => (rules.join("\n"), None),
            };
            ClientRow {
                id: c.id.clone(),
                label: label(c, &instances),
                is_instance: c.instance_id.is_some(),
                rules,
                rules_text,
                error,
                disabled: c.disabled,
            }
        })
        .collect();
    clients.sort_by(|a, b| a.label.cmp(&b.label).then(a.id.cmp(&b.id)));
    let labelled: Vec<(String, &[AclRule])> = listed
        .iter()
        .map(|c| (label(c, &instances), c.rules.as_slice()))
        .collect();
    let named: Vec<(&str, &[AclRule])> = labelled.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    let who_may = mqtt_view::who_may(&named);
    let layout = Layout::new(format!("{} · MQTT broker", team.name), Some(&me), "home")
        .with_notice(notice(ctx.query_param("done").as_deref()));
    render_status(
        status,
        &BrokerPage {
            layout,
            team,
            clients,
            who_may,
            connect: connect(ctx),
            errors: extra.errors,
            new_name: extra.new_name,
            new_rules: extra.new_rules,
            shown: extra.shown,
        },
    )
}

pub async fn page(ctx: Ctx, Path(team): Path<String>) -> Response {
    broker_page(&ctx, &team, Extra::default(), StatusCode::OK).await
}

/// Why the API refused rules, naming the first line whose rule is refused
/// on its own (the API's message says what is wrong with it).
fn rules_refusal(f: &Failure, lines: &[RuleLine]) -> String {
    let bad = lines
        .iter()
        .find(|l| check_rules(std::slice::from_ref(&l.rule)).is_err());
    match bad {
        Some(l) => sentence(&format!("line {}: {}", l.line, f.message)),
        None => describe(f),
    }
}

const RULE_CODES: [&str; 3] = ["invalid_rules", "invalid_filter", "invalid_topic"];

fn rules_of(lines: &[RuleLine]) -> Vec<AclRule> {
    lines.iter().map(|l| l.rule.clone()).collect()
}

pub async fn create(ctx: Ctx, Path(team): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    submit::signed_in(ctx, body, |p: Posted| async move {
        let name = p.form.text("name");
        let typed = p.form.raw("rules");
        let again = |errors: FieldErrors, status: StatusCode, name: String, typed: String| async move {
            let extra = Extra {
                errors,
                new_name: name,
                new_rules: typed,
                ..Extra::default()
            };
            Done::Again(broker_page(ctx, team, extra, refused_status(status)).await)
        };
        let lines = match mqtt_view::parse_rule_lines(&typed) {
            Ok(lines) => lines,
            Err(e) => {
                let errors = FieldErrors {
                    form: None,
                    fields: vec![("rules", sentence(&e.message))],
                };
                return again(errors, StatusCode::UNPROCESSABLE_ENTITY, name, typed).await;
            }
        };
        let request = json!({ "name": name, "rules": rules_of(&lines) });
        match p
            .api
            .post::<BrokerCredentials>(Method::POST, &clients_api(team), &request)
            .await
        {
            Ok(created) => {
                let extra = Extra {
                    shown: Some(Shown {
                        label: created.client.name.clone(),
                        username: created.username,
                        password: created.password,
                        rotated: false,
                    }),
                    ..Extra::default()
                };
                Done::ShownOnce {
                    page: broker_page(ctx, team, extra, StatusCode::OK).await,
                    then: format!("{}#clients", page_path(team)),
                }
            }
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let errors = if RULE_CODES.iter().any(|c| f.is(c)) {
                    FieldErrors {
                        form: None,
                        fields: vec![("rules", rules_refusal(&f, &lines))],
                    }
                } else {
                    FieldErrors::from_failure(
                        &f,
                        &[
                            ("invalid_name", "name"),
                            ("name_taken", "name"),
                            ("too_many_clients", "name"),
                        ],
                    )
                };
                again(errors, f.status, name, typed).await
            }
        }
    })
    .await
}

/// The forms on one client: `rules`, `rotate`, `disable`, `enable`, `revoke`.
pub async fn action(
    ctx: Ctx,
    Path((team, id, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    if !crate::ids::looks_like_id(&id) {
        return error_page(&Failure::not_found(), None);
    }
    let client = format!("{}/{id}", clients_api(team));
    let here = page_path(team);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let again = |extra: Extra, status: StatusCode| async move {
            Done::Again(broker_page(ctx, team, extra, refused_status(status)).await)
        };
        let refused = |f: Failure| async move {
            if f.needs_login() {
                return Done::Again(ctx.refused(&f, None));
            }
            let extra = Extra {
                errors: FieldErrors {
                    form: Some(describe(&f)),
                    fields: Vec::new(),
                },
                ..Extra::default()
            };
            again(extra, f.status).await
        };
        match action.as_str() {
            "rules" => {
                let typed = p.form.raw("rules");
                let edit_refused = |why: String, status: StatusCode, typed: String| {
                    let extra = Extra {
                        edit: Some((id.clone(), typed, why)),
                        ..Extra::default()
                    };
                    again(extra, status)
                };
                let lines = match mqtt_view::parse_rule_lines(&typed) {
                    Ok(lines) => lines,
                    Err(e) => {
                        return edit_refused(
                            sentence(&e.message),
                            StatusCode::UNPROCESSABLE_ENTITY,
                            typed,
                        )
                        .await
                    }
                };
                let rules = json!(rules_of(&lines));
                match p
                    .api
                    .act(Method::PUT, &format!("{client}/rules"), Some(&rules))
                    .await
                {
                    Ok(_) => Done::Redirect(format!("{here}?done=rules_saved#client-{id}")),
                    Err(f) if RULE_CODES.iter().any(|c| f.is(c)) => {
                        edit_refused(rules_refusal(&f, &lines), f.status, typed).await
                    }
                    Err(f) => refused(f).await,
                }
            }
            "rotate" => {
                let reply = p
                    .api
                    .send(Method::POST, &format!("{client}/rotate"), None)
                    .await;
                match reply.json::<BrokerCredentials>() {
                    Ok(rotated) => {
                        let extra = Extra {
                            shown: Some(Shown {
                                label: rotated.client.name.clone(),
                                username: rotated.username,
                                password: rotated.password,
                                rotated: true,
                            }),
                            ..Extra::default()
                        };
                        Done::ShownOnce {
                            page: broker_page(ctx, team, extra, StatusCode::OK).await,
                            then: format!("{here}#client-{id}"),
                        }
                    }
                    Err(f) => refused(f).await,
                }
            }
            "disable" | "enable" => {
                let path = format!("{client}/{action}");
                match p.api.act(Method::POST, &path, Some(&json!({}))).await {
                    Ok(_) => Done::Redirect(format!("{here}?done=client_{action}d#client-{id}")),
                    Err(f) => refused(f).await,
                }
            }
            "revoke" => match p.api.act(Method::DELETE, &client, None).await {
                Ok(_) => Done::Redirect(format!("{here}?done=client_revoked#clients")),
                Err(f) => refused(f).await,
            },
            _ => Done::Again(error_page(&Failure::not_found(), None)),
        }
    })
    .await
}
