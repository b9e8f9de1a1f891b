//! ferroflow's own endpoints for the promotion history, under `/api/2.0/ferroflow/` (MLflow has
//! no such API): the history of a model, what held a target at an instant, rolling an alias
//! back, and asking the promotion policies about a move without making it. Errors use MLflow's JSON shape and codes, as everywhere else.

use axum::Json;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::InWorkspace;
use super::auth::Identity;
use super::endpoints::Routes;
use super::error::{ApiError, ApiResult, Required, non_empty};
use super::request::{Mlflow, lenient};
use crate::store::registry::{
    DEFAULT_PROMOTIONS_PAGE, Holder, Promotion, RuleResult, Stage, Target, TargetType,
};

pub fn routes() -> Routes {
    Routes::new()
        .route("/promotions", get(list_promotions))
        .route("/promotions/at", get(promotion_at))
        .route("/promotions/rollback", post(rollback))
        .route("/promotions/check", post(check))
}

#[derive(Deserialize)]
struct ListRequest {
    name: Option<String>,
    target: Option<String>,
    target_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
    page_token: Option<String>,
}

#[derive(Serialize)]
struct ListResponse {
    promotions: Vec<Promotion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

/// `target_type` defaults to `alias`; a stage's name is accepted in any case.
fn target_type(text: Option<String>) -> ApiResult<TargetType> {
    Ok(match non_empty(text) {
        Some(text) => TargetType::parse(&text)?,
        None => TargetType::Alias,
    })
}

async fn list_promotions(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<ListRequest>,
) -> ApiResult<Json<ListResponse>> {
    let name = non_empty(request.name).required("name")?;
    let target_type = target_type(request.target_type)?;
    let target = non_empty(request.target).map(|target| match target_type {
        TargetType::Alias => Ok(target),
        TargetType::Stage => {
            crate::store::registry::Stage::parse(&target).map(|stage| stage.as_str().to_owned())
        }
    });
    let target = target.transpose()?;
    let page = state
        .store
        .promotions(
            &name,
            target.as_deref().map(|target| (target_type, target)),
            request.max_results.unwrap_or(DEFAULT_PROMOTIONS_PAGE),
            request.page_token.as_deref(),
        )
        .await?;
    Ok(Json(ListResponse {
        promotions: page.items,
        next_page_token: page.next_page_token,
    }))
}

#[derive(Deserialize)]
struct AtRequest {
    name: Option<String>,
    target: Option<String>,
    target_type: Option<String>,
    /// Milliseconds since the epoch, or an RFC 3339 time.
    time: Option<String>,
}

async fn promotion_at(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<AtRequest>,
) -> ApiResult<Json<Holder>> {
    let name = non_empty(request.name).required("name")?;
    let target = non_empty(request.target).required("target")?;
    let time = parse_time(&non_empty(request.time).required("time")?)?;
    let holder = state
        .store
        .promotion_at(&name, target_type(request.target_type)?, &target, time)
        .await?;
    Ok(Json(holder))
}

/// Milliseconds since the epoch, or an RFC 3339 time (`2026-12-07T10:00:00Z`).
fn parse_time(text: &str) -> ApiResult<i64> {
    if let Ok(millis) = text.parse::<i64>() {
        return Ok(millis);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis())
        .map_err(|_| {
            ApiError::invalid(format!(
                "Invalid value '{text}' for parameter 'time': expected milliseconds since the epoch or an RFC 3339 time."
            ))
        })
}

#[derive(Deserialize)]
struct RollbackRequest {
    name: Option<String>,
    alias: Option<String>,
}

#[derive(Serialize)]
struct RollbackResponse {
    promotion: Promotion,
}

async fn rollback(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<RollbackRequest>,
) -> ApiResult<Json<RollbackResponse>> {
    let name = non_empty(request.name).required("name")?;
    let alias = non_empty(request.alias).required("alias")?;
    let promotion = state
        .store
        .rollback_alias(&name, &alias, identity.actor())
        .await?;
    Ok(Json(RollbackResponse { promotion }))
}

#[derive(Deserialize)]
struct CheckRequest {
    name: Option<String>,
    target: Option<String>,
    target_type: Option<String>,
    version: Option<String>,
}

/// The dry run's answer: `allowed` is what a move would get now.
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckResponse {
    pub allowed: bool,
    pub results: Vec<RuleResult>,
}

async fn check(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<CheckRequest>,
) -> ApiResult<Json<CheckResponse>> {
    let name = non_empty(request.name).required("name")?;
    let target = non_empty(request.target).required("target")?;
    let version = super::registry::parse_version(request.version)?;
    let target = match target_type(request.target_type)? {
        TargetType::Alias => Target::Alias(&target),
        TargetType::Stage => Target::Stage(Stage::parse(&target)?),
    };
    let results = state.store.check_promotion(&name, target, version).await?;
    Ok(Json(CheckResponse {
        allowed: results.iter().all(|result| result.passed),
        results,
    }))
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_are_epoch_millis_or_rfc3339() {
        assert_eq!(parse_time("1700000000000").ok(), Some(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").ok(),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20+01:00").ok(),
            Some(1_700_000_000_000)
        );
        assert!(parse_time("yesterday").is_err());
    }
}
