//! The promotion history calls (`/api/2.0/ferroflow/promotions…`) behind `ferroflow
//! promotions` and `ferroflow rollback`.

use serde::Deserialize;
use serde_json::json;

use super::{ClientError, MlflowClient};
use crate::api::promotions::CheckResponse;
use crate::store::registry::{Promotion, PromotionPath, TargetType};

const PROMOTIONS: &str = "api/2.0/ferroflow/promotions";
const ROLLBACK: &str = "api/2.0/ferroflow/promotions/rollback";
const CHECK: &str = "api/2.0/ferroflow/promotions/check";

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    promotions: Vec<Promotion>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct Rollback {
    promotion: Promotion,
}

impl MlflowClient {
    /// The whole history of model `name` (every page), optionally of one target, oldest first.
    pub async fn promotions(
        &self,
        name: &str,
        target: Option<(TargetType, &str)>,
    ) -> Result<Vec<Promotion>, ClientError> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let mut query = vec![("name", name), ("max_results", "1000")];
            if let Some((target_type, target)) = target {
                query.extend([("target", target), ("target_type", target_type.as_str())]);
            }
            if !token.is_empty() {
                query.push(("page_token", &token));
            }
            let page: Page = self.decode(PROMOTIONS, self.get(PROMOTIONS, &query).await?)?;
            all.extend(page.promotions);
            match page.next_page_token {
                Some(next) => token = next,
                None => return Ok(all),
            }
        }
    }

    /// What the promotion policies say about moving `target` to `version` (a dry run).
    pub async fn check_promotion(
        &self,
        name: &str,
        target: (TargetType, &str),
        version: i64,
    ) -> Result<CheckResponse, ClientError> {
        let body = json!({
            "name": name,
            "target_type": target.0.as_str(),
            "target": target.1,
            "version": version.to_string(),
        });
        let answer = self.post(CHECK, body).await?;
        self.decode(CHECK, answer)
    }

    /// Moves `alias` back to the version that held it before; the history entry it wrote.
    pub async fn rollback_alias(&self, name: &str, alias: &str) -> Result<Promotion, ClientError> {
        let answer = self
            .post(ROLLBACK, json!({ "name": name, "alias": alias }))
            .await?;
        Ok(self.decode::<Rollback>(ROLLBACK, answer)?.promotion)
    }
}

/// The history as `ferroflow promotions` prints it: one line per entry, columns aligned.
pub fn table(entries: &[Promotion]) -> String {
    let mut rows = vec![
        [
            "ID", "TIME", "MODEL", "TARGET", "CHANGE", "ACTOR", "PATH", "RESULT",
        ]
        .map(str::to_owned),
    ];
    rows.extend(entries.iter().map(|entry| {
        let version = |version: Option<i64>| version.map_or("-".to_owned(), |v| v.to_string());
        let change = match entry.target_type {
            TargetType::Alias => format!(
                "{} -> {}",
                version(entry.from_version),
                version(entry.to_version)
            ),
            TargetType::Stage => format!(
                "v{}: {} -> {}",
                version(entry.to_version),
                entry.from_stage.as_deref().unwrap_or("-"),
                entry.target
            ),
        };
        let time = chrono::DateTime::from_timestamp_millis(entry.timestamp)
            .map_or_else(|| entry.timestamp.to_string(), |time| time.to_rfc3339());
        let result = match (entry.allowed, entry.rollback) {
            (true, false) => "allowed",
            (true, true) => "rollback",
            (false, _) => "denied",
        };
        [
            entry.id.to_string(),
            time,
            entry.name.clone(),
            format!("{}:{}", entry.target_type.as_str(), entry.target),
            change,
            entry.actor.clone(),
            match entry.path {
                PromotionPath::Api => "api",
                PromotionPath::Operator => "operator",
            }
            .to_owned(),
            result.to_owned(),
        ]
    }));
    let widths: Vec<usize> = (0..8)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        target_type: TargetType,
        target: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Promotion {
        Promotion {
            id: 7,
            timestamp: 1_700_000_000_000,
            name: "churn".into(),
            target_type,
            target: target.into(),
            from_version: from,
            to_version: to,
            from_stage: (target_type == TargetType::Stage).then(|| "Staging".to_owned()),
            actor: "team-a/RegisteredModel/churn".into(),
            path: PromotionPath::Operator,
            allowed: true,
            rollback: false,
            results: Vec::new(),
        }
    }

    #[test]
    fn the_table_aligns_columns_and_spells_each_kind_of_change() {
        let printed = table(&[
            entry(TargetType::Alias, "champion", None, Some(3)),
            entry(TargetType::Stage, "Production", None, Some(3)),
        ]);
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  TIME"), "{printed}");
        assert!(lines[1].contains("alias:champion    - -> 3"), "{printed}");
        assert!(
            lines[2].contains("stage:Production  v3: Staging -> Production"),
            "{printed}"
        );
        assert!(lines[1].contains("2023-11-14T22:13:20+00:00"), "{printed}");
        let column = lines[0].find("ACTOR").unwrap();
        assert_eq!(lines[1].find("team-a/").unwrap(), column);
    }
}
