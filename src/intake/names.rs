//! Names for the pipeline and stage ids a payload carries, looked up at the CRM before anything is stored,
//! under their own time bound: a slow CRM delays the names (events then carry ids only), never the answer
//! about durability, and is never reported to the sender as "queue unavailable".
//!
//! Each freshly fetched location is checked against the rules: a rule whose pipeline or stage is neither an
//! id nor a name there can never fire in that location; that is logged and counted once per fetch.

use std::collections::BTreeSet;
use std::time::Duration;

use super::occurrences::Names;
use crate::event::{LocationId, Observation};
use crate::rules::RuleSet;
use crate::upstream::pipelines::{PipelineMap, PipelineNames};

/// Longest the receiver waits for names before it goes on without them.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// The names of every location whose stages the observations mention; locations the CRM did not answer for
/// in time are left out.
pub async fn look_up(resolver: Option<&PipelineNames>, observations: &[Observation], rules: &RuleSet) -> Names {
    let mut names = Names::new();
    let Some(resolver) = resolver else { return names };
    let locations: BTreeSet<&LocationId> = observations
        .iter()
        .filter_map(|o| match o {
            Observation::Stage { location_id, .. } => Some(location_id),
            _ => None,
        })
        .collect();
    for location in locations {
        let lookup = resolver.map(location, |map| warn_unresolved(map, location, rules));
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Some(map)) => {
                names.insert(location.clone(), map);
            }
            Ok(None) => {}
            Err(_) => tracing::warn!(%location, "the CRM's pipelines did not answer in time; stage names unresolved"),
        }
    }
    names
}

/// Logs and counts each rule value that is neither an id nor a name in the location's pipelines.
fn warn_unresolved(map: &PipelineMap, location: &LocationId, rules: &RuleSet) {
    for (rule, value) in rules.stage_values(location) {
        if !map.knows(&value) {
            tracing::warn!(
                rule = %rule,
                %location,
                value,
                "a pipeline or stage in this rule is no id or name in the location's pipelines; it cannot fire there"
            );
            metrics::counter!("followd_rule_unresolved_names_total", "rule" => rule.to_string()).increment(1);
        }
    }
}
