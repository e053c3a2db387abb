//! Names for pipeline and stage ids, per location, from the CRM's pipelines API, cached for a while.
//!
//! GoHighLevel's app webhooks carry only ids (`shared/ghl/API.md` §7), but people write rules with names
//! ("Closed Won"). The receiver looks the names up here and adds them to the event, so a rule written with
//! either matches. Whoever asks may check something against each fresh fetch (the receiver checks its rules:
//! a rule whose pipeline or stage is neither an id nor a name there can never fire in that location).

use std::collections::HashMap;
use std::sync::Arc;

use super::cached::PerLocation;
use super::{Pipeline, Upstream};
use crate::event::{LocationId, NameLookup, StageNames};

/// A location's ids and their names (normalized names too, for checking rules).
#[derive(Debug, Default)]
pub struct PipelineMap {
    pipelines: HashMap<String, String>,
    stages: HashMap<String, String>,
    /// Every id and name, normalized (trimmed, lower case), as rules compare them.
    known: std::collections::HashSet<String>,
}

impl PipelineMap {
    pub fn new(pipelines: &[Pipeline]) -> Self {
        let mut map = Self::default();
        for pipeline in pipelines {
            map.pipelines.insert(pipeline.id.clone(), pipeline.name.clone());
            map.known.extend([normalize(&pipeline.id), normalize(&pipeline.name)]);
            for stage in &pipeline.stages {
                map.stages.insert(stage.id.clone(), stage.name.clone());
                map.known.extend([normalize(&stage.id), normalize(&stage.name)]);
            }
        }
        map
    }

    /// Whether a rule's value (normalized) is an id or a name here.
    pub fn knows(&self, value: &str) -> bool {
        self.known.contains(value)
    }
}

impl NameLookup for PipelineMap {
    /// The names of an event's ids, where known.
    fn names(&self, pipeline: &str, stage: &str, from_stage: Option<&str>) -> StageNames {
        StageNames {
            pipeline: self.pipelines.get(pipeline).cloned(),
            stage: self.stages.get(stage).cloned(),
            from_stage: from_stage.and_then(|id| self.stages.get(id)).cloned(),
        }
    }
}

fn normalize(value: &str) -> String {
    crate::event::normalize(value).into_owned()
}

/// The per-location cache in front of the pipelines API.
pub struct PipelineNames {
    upstream: Arc<Upstream>,
    cache: PerLocation<PipelineMap>,
}

impl PipelineNames {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self { upstream, cache: PerLocation::default() }
    }

    /// The location's map, fetched when missing or older than [`super::cached::TTL`]; `None` in a dry run or
    /// while the CRM cannot be asked (events meanwhile carry ids only). `on_fetch` sees each freshly fetched
    /// map once.
    pub async fn map(&self, location: &LocationId, on_fetch: impl FnOnce(&PipelineMap)) -> Option<Arc<PipelineMap>> {
        let read = async { Ok(self.upstream.pipelines(location).await?.map(|pipelines| PipelineMap::new(&pipelines))) };
        self.cache.get(location, "pipelines; stage names unresolved", read, on_fetch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NameLookup;
    use crate::upstream::Stage;

    #[test]
    fn ids_get_their_names_and_both_count_as_known() {
        let map = PipelineMap::new(&[Pipeline {
            id: "pip1".into(),
            name: "Sales".into(),
            stages: vec![
                Stage { id: "st1".into(), name: "New".into() },
                Stage { id: "st2".into(), name: "Closed Won".into() },
            ],
        }]);
        let names = map.names("pip1", "st2", Some("st1"));
        assert_eq!(
            (names.pipeline.as_deref(), names.stage.as_deref(), names.from_stage.as_deref()),
            (Some("Sales"), Some("Closed Won"), Some("New"))
        );
        assert!(map.knows("closed won") && map.knows("st2") && !map.knows("lost"));
    }
}
