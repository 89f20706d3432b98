//! Pipelines: ordered stages, each a deploy target, through which a
//! snapshot is promoted one stage at a time. A stage can require approval
//! by an Owner other than the one who promoted; until then nothing is
//! deployed. Environment values are the instances' own, so each stage keeps
//! its values (a snapshot carries only the variables' names).

use redwall_policy::audit_event::AuditEvent;
use redwall_policy::deploy_window::DeployWindow;
use redwall_policy::pipeline_rules::{
    check_pipeline_name, check_stages, may_approve, ApprovalRefusal, StageSpec,
};
use redwall_store::{Deployment, PipelineRow, Promotion, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{Event, Who};
use crate::snapshots::deploy::Reason;
use crate::snapshots::schedule::{DeployRequest, Target};
use crate::{Hub, HubError, HubResult};

/// Waiting for an Owner other than the promoter.
pub const AWAITING_APPROVAL: &str = "awaiting_approval";
/// Its deployments exist (they carry their own progress).
pub const RELEASED: &str = "released";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    pub target: Target,
    #[serde(default)]
    pub requires_approval: bool,
}

/// A pipeline as the hub shows it.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pipeline {
    pub id: String,
    pub name: String,
    pub stages: Vec<Stage>,
    pub created_at: i64,
}

/// A promotion with where its deployments stand.
#[derive(Clone, Debug)]
pub struct PromotionState {
    pub promotion: Promotion,
    /// awaiting_approval, scheduled (waiting for a window), deploying, done
    /// or failed.
    pub state: &'static str,
    pub deployments: Vec<Deployment>,
}

fn pipeline_of(row: &PipelineRow) -> HubResult<Pipeline> {
    Ok(Pipeline {
        id: row.id.clone(),
        name: row.name.clone(),
        stages: serde_json::from_str(&row.stages).map_err(HubError::internal)?,
        created_at: row.created_at,
    })
}

fn refusal(r: ApprovalRefusal) -> HubError {
    match r {
        ApprovalRefusal::NotOwner => HubError::Refused {
            kind: crate::error::Refused::Forbidden,
            code: r.code(),
            message: "only an Owner approves a promotion".to_string(),
        },
        ApprovalRefusal::OwnPromotion => HubError::Refused {
            kind: crate::error::Refused::Forbidden,
            code: r.code(),
            message:
                "a promotion needs the approval of an Owner other than the one who promoted it"
                    .to_string(),
        },
        ApprovalRefusal::NotAwaitingApproval => {
            HubError::conflict(r.code(), "this promotion is not waiting for approval")
        }
    }
}

/// The state of a promotion from its deployments.
fn state_of(p: &Promotion, deployments: &[Deployment]) -> &'static str {
    if p.status == AWAITING_APPROVAL {
        return AWAITING_APPROVAL;
    }
    if deployments.iter().any(|d| d.status == "failed") {
        "failed"
    } else if !deployments.is_empty() && deployments.iter().all(|d| d.status == "done") {
        "done"
    } else if deployments.iter().any(|d| d.status == "deploying") {
        "deploying"
    } else {
        "scheduled"
    }
}

impl Hub {
    pub async fn create_pipeline(
        &self,
        who: Who<'_>,
        team_id: &str,
        name: &str,
        stages: Vec<Stage>,
        created_by: &str,
    ) -> HubResult<Pipeline> {
        check_pipeline_name(name)?;
        let specs: Vec<StageSpec> = stages
            .iter()
            .map(|s| StageSpec {
                name: s.name.clone(),
                requires_approval: s.requires_approval,
            })
            .collect();
        check_stages(&specs)?;
        for stage in &stages {
            self.check_target(team_id, &stage.target).await?;
        }
        let now = self.now();
        let row = PipelineRow {
            id: crate::ids::new_id(),
            team_id: team_id.to_string(),
            name: name.to_string(),
            stages: serde_json::to_string(&stages).map_err(HubError::internal)?,
            created_by: Some(created_by.to_string()),
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.begin().await?;
        match tx.create_pipeline(&row).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(HubError::conflict(
                    "name_taken",
                    "the team has a pipeline with this name",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::PipelineChanged,
                format!("pipeline:{name}"),
                json!({ "pipeline": row.id, "stages": stages }),
            ),
        );
        self.commit(tx, 1).await?;
        pipeline_of(&row)
    }

    pub async fn pipelines(&self, team_id: &str) -> HubResult<Vec<Pipeline>> {
        self.store
            .list_pipelines(team_id)
            .await?
            .iter()
            .map(pipeline_of)
            .collect()
    }

    pub async fn pipeline(&self, team_id: &str, id_or_name: &str) -> HubResult<Pipeline> {
        let row = self
            .store
            .get_pipeline(team_id, id_or_name)
            .await?
            .ok_or(HubError::NotFound)?;
        pipeline_of(&row)
    }

    pub async fn delete_pipeline(&self, who: Who<'_>, team_id: &str, id: &str) -> HubResult<()> {
        let p = self.pipeline(team_id, id).await?;
        let mut tx = self.begin().await?;
        tx.delete_pipeline(team_id, &p.id).await?;
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::PipelineChanged,
                format!("pipeline:{}", p.name),
                json!({ "pipeline": p.id, "deleted": true }),
            ),
        );
        self.commit(tx, 1).await
    }

    /// Promotes the snapshot into the stage (by name). Into any stage but
    /// the first only once the previous stage runs it everywhere.
    #[allow(clippy::too_many_arguments)]
    pub async fn promote(
        &self,
        who: Who<'_>,
        team_id: &str,
        pipeline: &str,
        stage_name: &str,
        snapshot_id: &str,
        window: DeployWindow,
        promoted_by: &str,
        as_user: &str,
    ) -> HubResult<PromotionState> {
        let p = self.pipeline(team_id, pipeline).await?;
        let stage = p
            .stages
            .iter()
            .position(|s| s.name == stage_name)
            .ok_or_else(|| HubError::invalid("invalid_stage", "the pipeline has no such stage"))?;
        self.load_snapshot(who, team_id, snapshot_id).await?;
        if stage > 0 && !self.stage_runs(&p, stage - 1, snapshot_id).await? {
            return Err(HubError::conflict(
                "previous_stage_not_done",
                format!(
                    "promote the snapshot into {} first, and let it finish there",
                    p.stages[stage - 1].name
                ),
            ));
        }
        let now = self.now();
        let needs_approval = p.stages[stage].requires_approval;
        let promotion = Promotion {
            id: crate::ids::new_id(),
            team_id: team_id.to_string(),
            pipeline_id: p.id.clone(),
            stage: stage as i64,
            snapshot_id: snapshot_id.to_string(),
            status: if needs_approval {
                AWAITING_APPROVAL
            } else {
                RELEASED
            }
            .to_string(),
            promoted_by: promoted_by.to_string(),
            approved_by: None,
            schedule: serde_json::to_string(&window).map_err(HubError::internal)?,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.begin().await?;
        tx.create_promotion(&promotion).await?;
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::PromotionRequested,
                format!("pipeline:{}", p.name),
                json!({
                    "promotion": promotion.id,
                    "stage": p.stages[stage].name,
                    "snapshot": snapshot_id,
                    "needs_approval": needs_approval,
                }),
            ),
        );
        self.commit(tx, 1).await?;
        if needs_approval {
            return Ok(PromotionState {
                promotion,
                state: AWAITING_APPROVAL,
                deployments: Vec::new(),
            });
        }
        self.release(who, &p, promotion, promoted_by, as_user).await
    }

    /// Approves a promotion waiting for it, then deploys it.
    pub async fn approve_promotion(
        &self,
        who: Who<'_>,
        team_id: &str,
        promotion_id: &str,
        approver_id: &str,
        approver_is_owner: bool,
        as_user: &str,
    ) -> HubResult<PromotionState> {
        let promotion = self
            .store
            .get_promotion(team_id, promotion_id)
            .await?
            .ok_or(HubError::NotFound)?;
        may_approve(
            approver_id,
            approver_is_owner,
            &promotion.promoted_by,
            promotion.status == AWAITING_APPROVAL,
        )
        .map_err(refusal)?;
        let p = self.pipeline(team_id, &promotion.pipeline_id).await?;
        let mut tx = self.begin().await?;
        if !tx
            .move_promotion(
                &promotion.id,
                AWAITING_APPROVAL,
                RELEASED,
                Some(approver_id),
                self.now(),
            )
            .await?
        {
            return Err(refusal(ApprovalRefusal::NotAwaitingApproval));
        }
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::PromotionApproved,
                format!("pipeline:{}", p.name),
                json!({
                    "promotion": promotion.id,
                    "promoted_by": promotion.promoted_by,
                    "snapshot": promotion.snapshot_id,
                }),
            ),
        );
        self.commit(tx, 1).await?;
        let promotion = Promotion {
            status: RELEASED.to_string(),
            approved_by: Some(approver_id.to_string()),
            ..promotion
        };
        self.release(who, &p, promotion, approver_id, as_user).await
    }

    /// Deploys a released promotion to its stage's target.
    async fn release(
        &self,
        who: Who<'_>,
        p: &crate::pipelines::Pipeline,
        promotion: Promotion,
        requested_by: &str,
        as_user: &str,
    ) -> HubResult<PromotionState> {
        let stage = usize::try_from(promotion.stage)
            .ok()
            .and_then(|i| p.stages.get(i))
            .ok_or_else(|| HubError::internal("a promotion names a missing stage"))?;
        let window: DeployWindow =
            serde_json::from_str(&promotion.schedule).map_err(HubError::internal)?;
        let deployments = self
            .deploy_to_target(
                who,
                DeployRequest {
                    team_id: &promotion.team_id,
                    snapshot_id: &promotion.snapshot_id,
                    target: &stage.target,
                    only: &[],
                    window,
                    reason: Reason::Promotion,
                    promotion_id: Some(&promotion.id),
                },
                requested_by,
                as_user,
            )
            .await?;
        let state = state_of(&promotion, &deployments);
        Ok(PromotionState {
            promotion,
            state,
            deployments,
        })
    }

    /// Whether every instance of the stage runs the snapshot through a
    /// finished promotion.
    async fn stage_runs(&self, p: &Pipeline, stage: usize, snapshot_id: &str) -> HubResult<bool> {
        for promotion in self.store.list_promotions(&p.id, 500).await? {
            if promotion.stage != stage as i64 || promotion.snapshot_id != snapshot_id {
                continue;
            }
            let deployments = self.store.promotion_deployments(&promotion.id).await?;
            if state_of(&promotion, &deployments) == "done" {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The pipeline's promotions, newest first, with their state.
    pub async fn promotions(
        &self,
        team_id: &str,
        pipeline: &str,
    ) -> HubResult<Vec<PromotionState>> {
        let p = self.pipeline(team_id, pipeline).await?;
        let mut out = Vec::new();
        for promotion in self.store.list_promotions(&p.id, 100).await? {
            let deployments = self.store.promotion_deployments(&promotion.id).await?;
            let state = state_of(&promotion, &deployments);
            out.push(PromotionState {
                promotion,
                state,
                deployments,
            });
        }
        Ok(out)
    }
}
