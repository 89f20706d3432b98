//! How long one access decision takes: every permission, for a team member
//! with a session and for a team-limited token with a permission list.
//! Run: `cargo bench -p redwall-policy --bench decide`. Prints the median of
//! 7 runs of 1,000,000 decisions each.

use redwall_policy::access::{decide, Caller, Credential, TokenScope, TokenTeam};
use redwall_policy::permission::{Permission, PlatformRole, TeamRole};
use std::hint::black_box;

mod timing;

fn median_ns_per_call(caller: &Caller<'_>) -> f64 {
    timing::median_ns_per_call(|i| {
        let p = Permission::ALL[i % Permission::ALL.len()];
        decide(black_box(caller), black_box(p)).is_ok()
    })
    .0
}

fn main() {
    let limited = [
        Permission::TeamRead,
        Permission::InstanceControl,
        Permission::AccountRead,
    ];
    let session = Caller {
        platform_role: PlatformRole::User,
        credential: Credential::Session {
            mfa_enrolment_pending: false,
        },
        team_role: Some(TeamRole::Member),
        admin_override: false,
        team_mfa_missing: false,
    };
    let token = Caller {
        credential: Credential::Token {
            scope: TokenScope::Full,
            team: TokenTeam::ThisTeam,
            permissions: Some(&limited),
        },
        ..session
    };
    println!(
        "decide, member session: {:.1} ns per call (median of 7 x 1,000,000)",
        median_ns_per_call(&session)
    );
    println!("decide, team-limited token with a permission list: {:.1} ns per call (median of 7 x 1,000,000)", median_ns_per_call(&token));
}
