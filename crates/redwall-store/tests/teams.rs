//! Teams, memberships and invitations, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use redwall_store::{both_backends, Invitation, MemberChange, StoreError};

fn invitation(id: &str, team: &str, invitee: &str, role: &str, expires: i64) -> Invitation {
    Invitation {
        id: id.to_owned(),
        team_id: team.to_owned(),
        team_name: String::new(),
        invitee_id: invitee.to_owned(),
        invitee_name: String::new(),
        role: role.to_owned(),
        invited_by: Some("owner".to_owned()),
        created_at: 100,
        expires_at: expires,
    }
}

both_backends!(
    a_team_starts_with_its_creator_as_owner,
    |store| async move {
        user(&store, "u1", "alice").await;
        let t = store.create_team("t1", "Ops", "u1", 10).await?;
        assert_eq!(t.name, "Ops");
        assert_eq!(
            store.get_member_role("t1", "u1").await?.as_deref(),
            Some("owner")
        );
        assert_eq!(store.get_member_role("t1", "nobody").await?, None);
        assert_eq!(store.get_member_role("no-team", "u1").await?, None);
        let mine = store.list_teams_of_user("u1").await?;
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].1, "owner");
        assert!(store.rename_team("t1", "Operations", 11).await?);
        assert!(
            store
                .set_team_settings("t1", true, &["10.0.0.0/8".to_owned()], 12)
                .await?
        );
        let t = store.get_team("t1").await?.unwrap();
        assert_eq!((t.name.as_str(), t.require_mfa), ("Operations", true));
        assert_eq!(t.allowed_cidrs, vec!["10.0.0.0/8".to_owned()]);
        Ok(())
    }
);

both_backends!(the_last_owner_stays, |store| async move {
    user(&store, "u1", "alice").await;
    user(&store, "u2", "bob").await;
    store.create_team("t1", "Ops", "u1", 10).await?;
    assert_eq!(
        store.set_member_role("t1", "u1", "member").await?,
        MemberChange::LastOwner
    );
    assert_eq!(
        store.remove_member("t1", "u1").await?,
        MemberChange::LastOwner
    );
    assert_eq!(
        store.teams_solely_owned_by("u1").await?,
        vec!["t1".to_owned()]
    );
    store
        .create_invitation(&invitation("i1", "t1", "u2", "owner", 1_000))
        .await?;
    store.accept_invitation("u2", "i1", 500).await?.unwrap();
    assert!(store.teams_solely_owned_by("u1").await?.is_empty());
    assert_eq!(
        store.set_member_role("t1", "u1", "viewer").await?,
        MemberChange::Done
    );
    assert_eq!(
        store.remove_member("t1", "u2").await?,
        MemberChange::LastOwner
    );
    assert_eq!(store.remove_member("t1", "u1").await?, MemberChange::Done);
    assert_eq!(
        store.remove_member("t1", "u1").await?,
        MemberChange::NotAMember
    );
    Ok(())
});

both_backends!(invitations_are_single_use_and_expire, |store| async move {
    user(&store, "u1", "alice").await;
    user(&store, "u2", "bob").await;
    user(&store, "u3", "carol").await;
    store.create_team("t1", "Ops", "u1", 10).await?;
    store
        .create_invitation(&invitation("i1", "t1", "u2", "viewer", 1_000))
        .await?;
    let dup = store
        .create_invitation(&invitation("i2", "t1", "u2", "member", 1_000))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))));
    // Someone else cannot accept it.
    assert!(store.accept_invitation("u3", "i1", 500).await?.is_none());
    // Expired: refused, and swept.
    assert!(store.accept_invitation("u2", "i1", 1_000).await?.is_none());
    assert_eq!(store.list_user_invitations("u2", 1_000).await?.len(), 0);
    assert_eq!(store.delete_expired_invitations(1_000).await?, 1);
    store
        .create_invitation(&invitation("i3", "t1", "u2", "viewer", 5_000))
        .await?;
    let listed = store.list_user_invitations("u2", 1_000).await?;
    assert_eq!(
        (
            listed[0].team_name.as_str(),
            listed[0].invitee_name.as_str()
        ),
        ("Ops", "bob")
    );
    let accepted = store.accept_invitation("u2", "i3", 1_000).await?.unwrap();
    assert_eq!(accepted.role, "viewer");
    assert_eq!(
        store.get_member_role("t1", "u2").await?.as_deref(),
        Some("viewer")
    );
    assert!(
        store.accept_invitation("u2", "i3", 1_000).await?.is_none(),
        "used once"
    );
    Ok(())
});

both_backends!(
    one_team_cannot_touch_anothers_invitations,
    |store| async move {
        user(&store, "u1", "alice").await;
        user(&store, "u2", "bob").await;
        store.create_team("ta", "A", "u1", 10).await?;
        store.create_team("tb", "B", "u1", 10).await?;
        store
            .create_invitation(&invitation("i1", "ta", "u2", "viewer", 1_000))
            .await?;
        assert!(store.revoke_invitation("tb", "i1").await?.is_none());
        assert_eq!(store.list_team_invitations("tb").await?.len(), 0);
        assert_eq!(store.list_team_invitations("ta").await?.len(), 1);
        assert!(
            store.decline_invitation("u1", "i1").await?.is_none(),
            "only the invitee declines"
        );
        assert!(store.decline_invitation("u2", "i1").await?.is_some());
        Ok(())
    }
);

both_backends!(
    deleting_a_team_removes_its_members_invitations_and_tokens,
    |store| async move {
        user(&store, "u1", "alice").await;
        user(&store, "u2", "bob").await;
        store.create_team("t1", "Ops", "u1", 10).await?;
        store
            .create_invitation(&invitation("i1", "t1", "u2", "viewer", 1_000))
            .await?;
        let mut t = token("k1", "u1", 10);
        t.team_id = Some("t1".to_owned());
        t.permissions = Some("[\"team:read\"]".to_owned());
        store.create_api_token(&t).await?;
        let stored = store
            .get_api_token_by_digest(&t.token_digest)
            .await?
            .unwrap();
        assert_eq!(stored.permissions.as_deref(), Some("[\"team:read\"]"));
        assert!(store.delete_team("t1").await?);
        assert!(store.get_team("t1").await?.is_none());
        assert_eq!(store.get_member_role("t1", "u1").await?, None);
        assert_eq!(store.list_user_invitations("u2", 0).await?.len(), 0);
        assert!(store
            .get_api_token_by_digest(&t.token_digest)
            .await?
            .is_none());
        assert!(!store.delete_team("t1").await?);
        Ok(())
    }
);

both_backends!(
    deleting_a_user_removes_their_memberships,
    |store| async move {
        user(&store, "u1", "alice").await;
        user(&store, "u2", "bob").await;
        store.create_team("t1", "Ops", "u1", 10).await?;
        store
            .create_invitation(&invitation("i1", "t1", "u2", "member", 1_000))
            .await?;
        store.accept_invitation("u2", "i1", 10).await?;
        assert!(store.delete_user("u2").await?);
        assert_eq!(store.list_members("t1").await?.len(), 1);
        Ok(())
    }
);

/// SSO group mapping and the API both change memberships; a mapping's
/// demotion must wait for the team's lock like the API's, or two concurrent
/// demotions on PostgreSQL (read committed) both see two Owners and leave
/// none.
#[tokio::test]
async fn a_mapped_demotion_waits_for_the_teams_lock_postgres() -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let Some(db) = redwall_store::testing::TestDatabase::postgres().await? else {
        return Ok(());
    };
    let store = redwall_store::Store::connect(&db.url).await?;
    user(&store, "u1", "alice").await;
    user(&store, "u2", "bob").await;
    store.create_team("t1", "Ops", "u1", 10).await?;
    store
        .write_membership("t1", "u2", Some("owner"), 11)
        .await?;

    // The API's path demotes alice under the team's lock, not yet committed.
    let mut api = sqlx::AnyConnection::connect(&db.url).await?;
    let mut tx = api.begin().await?;
    sqlx::query("SELECT id FROM teams WHERE id = $1 FOR UPDATE")
        .bind("t1")
        .fetch_optional(&mut *tx)
        .await?;
    sqlx::query("UPDATE memberships SET role = 'member' WHERE team_id = 't1' AND user_id = 'u1'")
        .execute(&mut *tx)
        .await?;
    let mapping = {
        let store = store.clone();
        tokio::spawn(async move { store.write_membership("t1", "u2", Some("member"), 12).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tx.commit().await?;
    let written = mapping.await??;
    assert_eq!(written, redwall_store::MembershipWrite::LastOwner);
    let owners = store
        .list_members("t1")
        .await?
        .iter()
        .filter(|m| m.role == "owner")
        .count();
    assert_eq!(owners, 1, "the team was left without an Owner");
    store.close().await;
    db.cleanup().await;
    Ok(())
}
