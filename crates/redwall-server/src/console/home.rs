//! Home: the user's teams and their instances, with live status and the
//! start/stop buttons their role allows.

use super::models::{Instance, Invitation, Team};
use super::page::{render, Ctx, Layout};
use askama::Template;
use axum::response::Response;
use futures::future::join_all;
use redwall_policy::permission::{role_holds, Permission, PlatformRole};

pub struct TeamBlock {
    pub team: Team,
    pub instances: Vec<Instance>,
}

#[derive(Template)]
#[template(path = "console/home.html")]
struct HomePage {
    layout: Layout,
    teams: Vec<TeamBlock>,
    invitations: usize,
    can_create_team: bool,
}

pub fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "team_created" => "The team was created.",
        "team_deleted" => "The team was deleted.",
        "left_team" => "You left the team.",
        "joined" => "You joined the team.",
        "declined" => "The invitation was declined.",
        "started" => "The instance is starting.",
        "stopped" => "The instance was stopped.",
        "restarted" => "The instance is restarting.",
        "instance_deleted" => "The instance was deleted.",
        _ => return None,
    })
}

pub async fn page(ctx: Ctx) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let teams = match ctx.api.get::<Vec<Team>>("/api/v1/teams").await {
        Ok(t) => t,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let lists = join_all(teams.iter().map(|t| {
        let path = format!("/api/v1/teams/{}/instances", t.id);
        let api = ctx.api.clone();
        async move { api.get::<Vec<Instance>>(&path).await.unwrap_or_default() }
    }))
    .await;
    let invitations = ctx
        .api
        .get::<Vec<Invitation>>("/api/v1/me/invitations")
        .await
        .map(|i| i.iter().filter(|i| !i.expired).count())
        .unwrap_or(0);
    let role = if me.is_admin {
        PlatformRole::Admin
    } else {
        PlatformRole::User
    };
    let layout = Layout::new("Your teams", Some(&me), "home")
        .with_notice(notice(ctx.query_param("done").as_deref()));
    render(&HomePage {
        layout,
        teams: teams
            .into_iter()
            .zip(lists)
            .map(|(team, instances)| TeamBlock { team, instances })
            .collect(),
        invitations,
        can_create_team: role_holds(role, Permission::TeamCreate),
    })
}
