//! The commands other than `serve`: each is a thin shell that prints what a module already computes, so the
//! command line and the server never disagree.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use std::time::Duration;

use crate::domain::clock::now_ms;
use crate::event::{ContactId, LocationId, Observation, UserId};
use crate::intake::{Names, Source, occurrences, plan};
use crate::queue::{ContactKey, EmbeddedQueue, Selection, Stores};

use crate::rules::{CaseOutcome, OpLines, RuleSet, compare, load_cases};

/// `followd rules check`: every error as `file:line:column: message`, then a summary; exit 1 on any error.
pub fn rules_check(dir: &Path) -> ExitCode {
    match RuleSet::load_dir(dir) {
        Ok(rules) => {
            // Users named by email are looked up only at delivery: say which, and where.
            let files = rule_files(dir).unwrap_or_default();
            let mut warnings = 0;
            let mut seen = std::collections::HashSet::new();
            for user in rules.addable_users().into_iter().flat_map(|a| a.users) {
                if let Some(email) = user.email().filter(|_| seen.insert(user.clone())) {
                    println!(
                        "{}: warning: {email} is looked up by email in each location's users when delivered (an \
                         address nobody has is skipped); `rules check --online` checks it now",
                        written_at(&files, dir, &user)
                    );
                    warnings += 1;
                }
            }
            let and_warnings = if warnings > 0 { format!(", {warnings} warning(s)") } else { String::new() };
            println!("ok: {} in {}{and_warnings}", rules.summary(), dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for diagnostic in &e.diagnostics {
                println!("{diagnostic}");
                if let Some(snippet) = crate::rules::report::render(diagnostic) {
                    println!("{snippet}");
                }
            }
            println!("{} error(s) in {}", e.diagnostics.len(), dir.display());
            ExitCode::FAILURE
        }
    }
}

/// `followd rules check --online [--location LOC]...`: the offline checks, then every user id a rule can make a
/// follower, checked in every location the rule applies to against the CRM's users there: unknown or deleted
/// is an error, one who sees every contact anyway (no `assignedDataOnly`) a warning. A rule without
/// `locations` applies to the `--location`s given, else to the locations of `upstream.tokens`. Messages point
/// at where the id is written (its alias under `[users]`).
pub async fn rules_check_online(config: &Config, dir: &Path, locations: &[String]) -> anyhow::Result<ExitCode> {
    let rules = match RuleSet::load_dir(dir) {
        Ok(rules) => rules,
        Err(_) => return Ok(rules_check(dir)),
    };
    let everywhere: Vec<LocationId> = if locations.is_empty() {
        config.upstream.tokens.keys().filter_map(|l| LocationId::parse(l).ok()).collect()
    } else {
        locations.iter().map(|l| LocationId::parse(l)).collect::<Result<_, _>>()?
    };
    let files = rule_files(dir)?;
    let written_at = |user: &UserId| written_at(&files, dir, user);
    let (upstream, _scratch) = reading_client(config).await?;
    let mut known: std::collections::HashMap<LocationId, Vec<crate::upstream::CrmUser>> = Default::default();
    let (mut errors, mut warnings) = (0, 0);
    for crate::rules::Addable { rule, locations: scope, users } in rules.addable_users() {
        let scope = scope.unwrap_or_else(|| everywhere.clone());
        if scope.is_empty() {
            println!("{}: rule `{rule}` applies to every location: name them with --location", dir.display());
            errors += 1;
            continue;
        }
        for location in &scope {
            if !known.contains_key(location) {
                let Some(listed) = upstream.users(location).await? else {
                    anyhow::bail!("no upstream token is configured: --online reads the CRM (scope users.readonly)");
                };
                known.insert(location.clone(), listed);
            }
            let listed = &known[location];
            for user in &users {
                let at = written_at(user);
                let same_email = |u: &&crate::upstream::CrmUser| {
                    u.email.as_deref().is_some_and(|e| user.email().is_some_and(|x| e.trim().eq_ignore_ascii_case(x)))
                };
                // By email: the live user with that address, else a deleted one (to say so).
                let found = match user.email() {
                    Some(_) => listed.iter().filter(same_email).min_by_key(|u| u.deleted),
                    None => listed.iter().find(|u| u.id == user.as_str()),
                };
                match found {
                    None if user.email().is_some() => {
                        println!(
                            "{at}: error: no user of location {location} has the email {} (rule `{rule}`)",
                            user.email().unwrap_or_default()
                        );
                        errors += 1;
                    }
                    None => {
                        println!("{at}: error: {user} is not a user of location {location} (rule `{rule}`)");
                        errors += 1;
                    }
                    Some(found) if found.deleted => {
                        println!("{at}: error: {user} was deleted in location {location} (rule `{rule}`)");
                        errors += 1;
                    }
                    Some(found) if !found.permissions.assigned_data_only => {
                        println!(
                            "{at}: warning: {user} sees every contact of location {location} anyway: following \
                             gives them nothing they cannot already see (rule `{rule}`)"
                        );
                        warnings += 1;
                    }
                    Some(_) => {}
                }
            }
        }
    }
    println!("{errors} error(s), {warnings} warning(s) online in {} location(s)", known.len());
    Ok(if errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A CRM client for a command that only reads: the store's OAuth tokens, or, while a running service holds the
/// embedded store, the configured fixed tokens (with a scratch store the returned directory keeps).
async fn reading_client(config: &Config) -> anyhow::Result<(crate::upstream::Upstream, tempfile::TempDir)> {
    let scratch = tempfile::tempdir()?;
    let tokens = match Stores::open(&crate::http::store_options(config)).await {
        Ok(stores) => stores.tokens,
        Err(crate::queue::QueueError::Locked(_)) if config.upstream.oauth.is_none() => {
            Stores::of(EmbeddedQueue::open(scratch.path(), Duration::from_secs(60), Duration::from_secs(60))?).tokens
        }
        Err(e) => return Err(e.into()),
    };
    Ok((crate::upstream::Upstream::from_config(&config.upstream, &config.base_dir, tokens)?, scratch))
}

/// Where `user` is written in the rule files (`file:line:column` of its first quoted occurrence, its alias),
/// else the directory.
fn written_at(files: &[(PathBuf, String)], dir: &Path, user: &UserId) -> String {
    let quoted = format!("\"{user}\"");
    files
        .iter()
        .find_map(|(path, text)| {
            // An email alias is written as the user wrote it; compared without case.
            let offset = text.to_ascii_lowercase().find(&quoted.to_ascii_lowercase())?;
            let line = text[..offset].matches('\n').count() + 1;
            let column = offset - text[..offset].rfind('\n').map_or(0, |n| n + 1) + 1;
            Some(format!("{}:{line}:{column}", path.display()))
        })
        .unwrap_or_else(|| dir.display().to_string())
}

/// The rule files of `dir` with their text, by name.
fn rule_files(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            let text = std::fs::read_to_string(&path)?;
            files.push((path, text));
        }
    }
    files.sort();
    Ok(files)
}

/// `followd rules explain`: the events a payload yields, the rules that fire and the operations that would
/// be queued. Runs the server's own code (`intake::occurrences` and `plan`) against a throwaway embedded store, so
/// whole-tag-list payloads are read as a first sight of the contact; verifies nothing, calls nothing, and
/// writes nothing that outlives the command.
pub async fn rules_explain(config: &Config, dir: &Path, source: &str, event_file: &Path) -> anyhow::Result<ExitCode> {
    let sources = if config.source.is_empty() {
        Source::defaults()
    } else {
        config.source.iter().map(|s| Source::from_config(s, &config.base_dir)).collect::<Result<Vec<_>, _>>()?
    };
    let source =
        sources.into_iter().find(|s| s.name == source).with_context(|| format!("no source named `{source}`"))?;
    let rules = RuleSet::load_dir(dir).map_err(|e| anyhow::anyhow!("the rules do not compile:\n{e}"))?;
    let body = std::fs::read(event_file).with_context(|| format!("cannot read {}", event_file.display()))?;
    let parsed = source.format.parse(&body)?;
    if let [Observation::Ignored { kind }] = parsed.observations.as_slice() {
        println!("payload type `{kind}` is not used by followd: acknowledged and ignored");
        return Ok(ExitCode::SUCCESS);
    }
    if let [Observation::User(change)] = parsed.observations.as_slice() {
        let effect = match change.status {
            crate::event::UserStatus::Deleted => "deleted: round robins skip them and nobody adds them again",
            crate::event::UserStatus::Restored => "restored: a deletion recorded before this payload's time is undone",
            crate::event::UserStatus::Updated => "updated: nothing followd keeps changes",
        };
        println!("user {} {effect}", change.user_id);
        return Ok(ExitCode::SUCCESS);
    }
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let store = EmbeddedQueue::open(scratch.path(), Duration::from_secs(60), Duration::from_secs(60))?;
    let occurrences = occurrences(&store, parsed, now_ms(), &Names::new()).await?;
    for occurrence in &occurrences {
        println!("event {} for contact {}:", occurrence.id, occurrence.contact.contact_id);
        for event in &occurrence.events {
            println!("  {}", serde_json::to_string(&event.kind)?);
            let considered = rules.explain(event);
            if considered.is_empty() {
                println!("    no rule listens to {} events", event.kind.name());
            }
            for consideration in considered {
                println!("    {consideration}");
            }
        }
    }
    let mut lines = OpLines::at(now_ms());
    for event in plan(&occurrences, &rules, Default::default()) {
        for planned in &event.ops {
            lines.push_for(&event.contact, &planned.action);
        }
    }
    for reason in lines.reasons() {
        println!("  {reason}");
    }
    let lines = lines.into_lines();
    println!("{} operation(s) would be queued (a round robin shows the pick of a fresh store):", lines.len());
    for line in &lines {
        println!("  {line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `followd rules test`: runs each case's payload through the server's own intake (`occurrences`, `plan`) on a
/// fresh throwaway store and compares the operations with the case's; prints a diff per failing case and
/// exits 1 on any failure, or on any error in the rules or the case files.
pub async fn rules_test(dir: &Path, cases: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let rules = match RuleSet::load_dir(dir) {
        Ok(rules) => rules,
        Err(e) => {
            println!("{e}\nthe rules in {} do not compile", dir.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let paths = if cases.is_empty() { vec![dir.join("tests")] } else { cases.to_vec() };
    let cases = match load_cases(&paths) {
        Ok(cases) => cases,
        Err(e) => {
            println!("{e}\n{} error(s) in the test cases", e.diagnostics.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut failed = 0;
    for case in &cases {
        let outcome = match crate::simulate::run_case(case, &rules).await {
            Ok(lines) => compare(case, &lines),
            Err(e) => CaseOutcome::failed(case, &format!("{e:#}")),
        };
        failed += usize::from(!outcome.passed);
        println!("{outcome}");
    }
    println!("{} passed, {failed} failed", cases.len() - failed);
    Ok(if failed == 0 && !cases.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `followd users --location LOC [--json]`: the location's users as the CRM lists them.
pub async fn users(config: &Config, location: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    // One location as asked, else every location the configuration has a token for.
    let locations: Vec<LocationId> = match location {
        Some(location) => vec![LocationId::parse(location).map_err(|e| anyhow::anyhow!("location id: {e}"))?],
        None => config.upstream.locations(),
    };
    if locations.is_empty() {
        anyhow::bail!("no location is configured (upstream.tokens, upstream.oauth): name one with --location");
    }
    let (upstream, _scratch) = reading_client(config).await?;
    let mut listed = Vec::with_capacity(locations.len());
    for location in locations {
        let Some(users) = upstream.users(&location).await? else {
            anyhow::bail!("no upstream token is configured: `followd users` reads the CRM (scope users.readonly)");
        };
        listed.push((location, users));
    }
    if json {
        // One location asked: its users as a list; every configured one: an object by location.
        let text = match (location, listed.as_slice()) {
            (Some(_), [(_, users)]) => serde_json::to_string_pretty(users)?,
            _ => serde_json::to_string_pretty(&listed.into_iter().collect::<std::collections::BTreeMap<_, _>>())?,
        };
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    for (location, users) in &listed {
        if listed.len() > 1 {
            println!("location {location}:");
        }
        println!("{:<24}  {:<24}  {:<32}  {:<8}  sees", "id", "name", "email", "deleted");
        for user in users {
            println!(
                "{:<24}  {:<24}  {:<32}  {:<8}  {}",
                user.id,
                user.name.as_deref().unwrap_or("-"),
                user.email.as_deref().unwrap_or("-"),
                if user.deleted { "yes" } else { "no" },
                if user.permissions.assigned_data_only { "only what they own or follow" } else { "every contact" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `followd queue stats`.
pub async fn queue_stats(config: &Config) -> anyhow::Result<ExitCode> {
    let stats = Stores::open(&crate::http::store_options(config)).await?.queue.stats().await?;
    println!("ready contacts:     {}", stats.ready);
    println!("leased contacts:    {}", stats.leased);
    println!("pending operations: {}", stats.pending);
    println!("dead letters:       {}", stats.dead);
    Ok(ExitCode::SUCCESS)
}

/// `followd dlq list [--json]`.
pub async fn dlq_list(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let letters = Stores::open(&crate::http::store_options(config)).await?.queue.dead_letters().await?;
    if json {
        let rows: Vec<serde_json::Value> = letters
            .iter()
            .map(|l| {
                serde_json::json!({
                    "id": l.id,
                    "location_id": l.location_id,
                    "contact_id": l.contact_id,
                    "operations": l.operations.iter().map(|q| &q.op).collect::<Vec<_>>(),
                    "status": l.status,
                    "reason": l.reason,
                    "failed_at": rfc3339(l.failed_at),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if letters.is_empty() {
        println!("no dead letters");
    } else {
        for l in &letters {
            let status = l.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
            println!(
                "{}  {}  location {} contact {}  {} operation(s)  status {status}  {}",
                l.id,
                rfc3339(l.failed_at),
                l.location_id,
                l.contact_id,
                l.operations.len(),
                l.reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `followd dlq replay ID|--all`.
pub async fn dlq_replay(config: &Config, which: &Selection) -> anyhow::Result<ExitCode> {
    let replayed = Stores::open(&crate::http::store_options(config)).await?.queue.replay(which, now_ms()).await?;
    println!("replayed {replayed} dead letter(s)");
    Ok(if replayed == 0 && matches!(which, Selection::One(_)) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `followd dlq purge ID|--all`.
pub async fn dlq_purge(config: &Config, which: &Selection) -> anyhow::Result<ExitCode> {
    let purged = Stores::open(&crate::http::store_options(config)).await?.queue.purge(which).await?;
    println!("purged {purged} dead letter(s)");
    Ok(if purged == 0 && matches!(which, Selection::One(_)) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// `followd audit CONTACT_ID [--location LOC] [--json]`: the contact's trail, newest first, then which of its
/// followers are followd's (it added them; a person's are never among them).
pub async fn audit(config: &Config, contact: &str, location: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let contact = ContactId::parse(contact).map_err(|e| anyhow::anyhow!("contact id: {e}"))?;
    let location = location.map(LocationId::parse).transpose().map_err(|e| anyhow::anyhow!("location id: {e}"))?;
    let stores = Stores::open(&crate::http::store_options(config)).await?;
    let trail = stores.audit.audit(location.as_ref(), &contact).await?;
    let mut locations: Vec<LocationId> = trail.iter().map(|e| e.location_id.clone()).chain(location).collect();
    locations.sort();
    locations.dedup();
    let mut owned = std::collections::BTreeMap::new();
    for location_id in locations {
        let key = ContactKey { location_id, contact_id: contact.clone() };
        let followers = stores.memory.known_followers(&key).await?;
        owned.insert(key.location_id, followers);
    }
    if json {
        let answer = serde_json::json!({ "contact_id": contact, "trail": trail, "followd_followers": owned });
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    if trail.is_empty() {
        println!("no follower changes recorded for contact {contact}");
    }
    for entry in &trail {
        let operation = match &entry.operation.op {
            crate::domain::followers::FollowerOp::Add(user) => format!("add {user}"),
            crate::domain::followers::FollowerOp::Remove(user) => format!("remove {user}"),
            crate::domain::followers::FollowerOp::RemoveAll => "remove all".to_owned(),
        };
        println!(
            "{}  location {}  {operation:<24}  {:<14} rule `{}`  event {}",
            rfc3339(entry.at),
            entry.location_id,
            entry.result.to_string(),
            entry.operation.rule,
            entry.operation.event_id
        );
        if let Some(note) = &entry.operation.note {
            println!("    {note}");
        }
    }
    for (location_id, followers) in &owned {
        let names: Vec<&str> = followers.iter().map(|u| u.as_str()).collect();
        let list = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
        println!(
            "followd's followers of {contact} in location {location_id} (oldest first): {list}; any other is a person's"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `followd queue resume LOCATION`: the pause ends now. Pauses are shared through Redis; the embedded store
/// keeps them in the serving process, where a restart clears them.
pub async fn queue_resume(config: &Config, location: &str) -> anyhow::Result<ExitCode> {
    let location = LocationId::parse(location).map_err(|e| anyhow::anyhow!("location id: {e}"))?;
    let locations = Stores::open(&crate::http::store_options(config)).await?.locations;
    let now = now_ms();
    match locations.paused(&location, now).await? {
        Some(pause) => {
            locations.pause(&location, now, "resumed by an operator", now).await?;
            println!("location {location} resumed (it was paused: {})", pause.reason);
        }
        None => println!("location {location} is not paused"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `followd reconcile --location LOC [--rules DIR] [--plan] [--json] [--ownership any|managed]`.
pub async fn reconcile(
    config: &Config,
    location: &str,
    rules_dir: &Path,
    plan: bool,
    json: bool,
    ownership: Option<crate::domain::followers::Ownership>,
) -> anyhow::Result<ExitCode> {
    use crate::reconcile::{Reconciler, desired::Judgement, progress::Progress};
    let location = LocationId::parse(location).map_err(|e| anyhow::anyhow!("location id: {e}"))?;
    let rules = match crate::rules::LiveRules::load(rules_dir) {
        Ok(live) => live.current(),
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let stores = match Stores::open(&crate::http::store_options(config)).await {
        Ok(stores) => Some(stores),
        // The embedded store belongs to a running service: a plan still reads the CRM, without the memory
        // of which followers followd added (an apply needs it, and says so).
        // An apply goes to the running service, which holds the store: it runs the reconcile itself.
        Err(crate::queue::QueueError::Locked(_)) if !plan => return ask_service_to_reconcile(config, &location).await,
        Err(crate::queue::QueueError::Locked(dir)) if plan && config.upstream.oauth.is_none() => {
            eprintln!(
                "note: {} is in use by a running followd; planning without its memory of the followers it added \
                 (removals limited to those are not shown)",
                dir.display()
            );
            None
        }
        Err(e) => return Err(e.into()),
    };
    let scratch = tempfile::tempdir()?;
    let tokens = match &stores {
        Some(stores) => Arc::clone(&stores.tokens),
        None => EmbeddedQueue::open(scratch.path(), Duration::from_secs(60), Duration::from_secs(60))
            .map(|q| Stores::of(q).tokens)?,
    };
    let upstream = crate::upstream::Upstream::from_config(&config.upstream, &config.base_dir, tokens)?;
    if upstream.is_dry_run() {
        return Err(crate::reconcile::ReconcileError::DryRun.into());
    }
    let reconciler = Reconciler {
        upstream: Arc::new(upstream),
        stores,
        rules,
        judgement: Judgement { run: ownership, config: config.followers.ownership },
        limits: crate::domain::rate::Limits::from(&config.rate_limit),
        max_share: config.reconcile.max_share,
        page_limit: config.reconcile.page_size,
        next_call: Default::default(),
        email_names: Default::default(),
    };
    let mut progress = Progress::new(json);
    let report = if plan {
        reconciler.plan(&location, &mut progress).await?
    } else {
        let (run, report) = reconciler.apply(&location, &mut progress).await?;
        if !json {
            println!("run {}: {} contacts read, {} changes queued", run.id, run.contacts_read, run.contacts_changed);
        }
        report
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the service that holds the embedded store to run the reconcile (`POST /reconcile/{location}`).
async fn ask_service_to_reconcile(config: &Config, location: &LocationId) -> anyhow::Result<ExitCode> {
    let response = service_request(config, reqwest::Method::POST, &format!("/reconcile/{location}"))?.send().await?;
    service_answer(response).await?;
    println!(
        "the running followd holds the store, so it runs this reconcile of {location} itself; \
         `followd reconcile status` or its status page shows the run"
    );
    Ok(ExitCode::SUCCESS)
}

/// A request to the service running with this configuration: its `listen` address (loopback when it listens
/// on every address), with the admin token when one is configured.
fn service_request(config: &Config, method: reqwest::Method, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let request = client.request(method, format!("http://{addr}{path}"));
    Ok(match &config.admin.token {
        Some(token) => {
            use secrecy::ExposeSecret as _;
            request.bearer_auth(token.resolve_named("admin.token", &config.base_dir)?.expose_secret())
        }
        None => request,
    })
}

/// The body of the service's answer, or an error that says what it answered.
async fn service_answer(response: reqwest::Response) -> anyhow::Result<String> {
    let status = response.status();
    let body = response.text().await?;
    if status.is_success() {
        return Ok(body);
    }
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    if status == reqwest::StatusCode::NOT_FOUND {
        anyhow::bail!("the running followd holds the store but cannot reconcile (a receiver, or a dry run)");
    }
    anyhow::bail!("the running followd answered {status}: {message}")
}

/// `followd reconcile status [--json]`.
pub async fn reconcile_status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let runs = match Stores::open(&crate::http::store_options(config)).await {
        Ok(stores) => stores.runs.runs().await?,
        // The embedded store belongs to a running service: it answers for it.
        Err(crate::queue::QueueError::Locked(_)) => {
            let response = service_request(config, reqwest::Method::GET, "/reconcile")?.send().await?;
            serde_json::from_str(&service_answer(response).await?)?
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no reconcile runs");
    }
    let now = now_ms();
    for run in &runs {
        let state = match &run.state {
            crate::queue::RunState::Running => "running (or interrupted: run the command again to resume)".to_owned(),
            crate::queue::RunState::Done => "done".to_owned(),
            crate::queue::RunState::Failed(reason) => format!("stopped: {reason}"),
        };
        println!(
            "{}  location {}  started {}  {} contacts read, {} changed (+{} -{}), updated {}s ago: {state}",
            run.id,
            run.location_id,
            rfc3339(run.started_at),
            run.contacts_read,
            run.contacts_changed,
            run.adds,
            run.removes,
            crate::reconcile::age(run, now).as_secs()
        );
    }
    Ok(ExitCode::SUCCESS)
}
