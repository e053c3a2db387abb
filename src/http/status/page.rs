//! The HTML of the status page and of its login form, from values already gathered: no I/O, no queue handle.
//!
//! Written with `maud`, whose `html!` checks the markup when the crate compiles and escapes every value it
//! splices in (`&`, `<`, `>`, `"`). Names, reasons and errors come from webhooks, the CRM and rule files, so
//! none of them can add markup to the page: escaping is the default, and the only unescaped text is the
//! constant style sheet below.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::decisions::Decision;
use crate::domain::clock::Millis;
use crate::domain::rate::LimiterState;
use crate::event::LocationId;
use crate::http::answers::{SourceShare, WARN_UNDER};
use crate::queue::{DeadLetter, DeletedUser, Pause, QueueStats, RunRecord, RunState};
use crate::rules::Summary;

/// One day in milliseconds: the limiter counts calls per UTC day (`LimiterState::day` is `now / DAY_MS`).
const DAY_MS: u64 = 86_400_000;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;\
margin-bottom:1.5rem}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;font-size:.9rem}\
th{background:#f3f3f3}.ok{color:#17692b}.bad{color:#a11}pre{background:#fbeaea;padding:.6rem}";

/// What the status page shows, read from the stores beforehand. A store that failed leaves its error message
/// in place of its values, so the rest of the page still renders.
pub(super) struct StatusView {
    /// The time the page speaks of: "today" for the call counts, "now" for the next free slot.
    pub now: Millis,
    /// Calls per location per day the limiter allows, shown beside today's count.
    pub daily_budget: u64,
    pub rules: Summary,
    /// The diagnostics of the last reload, when it failed.
    pub reload_error: Option<String>,
    pub queue: Result<QueueStats, String>,
    pub locations: Vec<LocationView>,
    /// Newest first.
    pub decisions: Vec<Decision>,
    pub dead_letters: Result<Vec<DeadLetter>, String>,
    /// Reconcile runs: each location's newest, oldest first.
    pub runs: Result<Vec<RunRecord>, String>,
    /// Each webhook source's answers over the last hour.
    pub senders: Vec<SourceShare>,
    /// The users the CRM deleted, each with the rules that still name them.
    pub deleted_users: Result<Vec<DeletedUserView>, String>,
}

/// A user the CRM deleted, and the rules that still name them.
pub(super) struct DeletedUserView {
    pub user: DeletedUser,
    pub rules: Vec<std::sync::Arc<str>>,
}

/// A location seen in the recent decisions: whether it is paused, and its share of the daily budget.
pub(super) struct LocationView {
    pub id: LocationId,
    /// When it may be called again and why, when paused.
    pub paused: Result<Option<Pause>, String>,
    /// `None`: no call counted yet.
    pub limiter: Result<Option<LimiterState>, String>,
}

/// A time as the page shows it, in UTC.
fn time(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// The document around `body`.
fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
}

/// The login form; `failed` when the token just given was wrong.
pub(super) fn login(failed: bool) -> Markup {
    layout(
        "followd: sign in",
        html! {
            h1 { "followd" }
            @if failed {
                p.bad { "That token is not the admin token." }
            }
            form method="post" action="/login" {
                label {
                    "Admin token "
                    input type="password" name="token" autocomplete="current-password";
                }
                " "
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// The users the CRM deleted and the rules that still name them (shown only when there are any).
fn deleted_users(deleted: &Result<Vec<DeletedUserView>, String>) -> Markup {
    html! {
        @match deleted {
            Err(error) => p.bad { "Deleted users: cannot read them: " (error) },
            Ok(users) if users.is_empty() => {},
            Ok(users) => {
                h3 { "Users the CRM deleted" }
                p { "Round robins skip them and no delivery adds them; edit the rules that still name them." }
                table {
                    tr { th { "user" } th { "name" } th { "deleted" } th { "rules that still name them" } }
                    @for DeletedUserView { user, rules } in users {
                        tr {
                            td { (user.user.as_str()) }
                            td { (user.name.as_deref().unwrap_or("")) }
                            td { (time(user.at)) }
                            @if rules.is_empty() {
                                td.ok { "none" }
                            } @else {
                                td.bad { (rules.join(", ")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The whole status page.
pub(super) fn status(view: &StatusView) -> Markup {
    layout(
        "followd status",
        html! {
            h1 { "followd" }
            h2 { "Rules" }
            p { (view.rules) }
            @match &view.reload_error {
                None => p.ok { "Last reload: ok." },
                Some(errors) => {
                    p.bad { "Last reload failed; the previous rules still serve:" }
                    pre { (errors) }
                }
            }
            (deleted_users(&view.deleted_users))
            h2 { "Queue" }
            (queue(&view.queue))
            h2 { "Locations" }
            table {
                tr { th { "location" } th { "state" } th { "calls today" } th { "next free slot" } }
                @for location in &view.locations {
                    (location_row(location, view.now, view.daily_budget))
                }
            }
            h2 { "Recent decisions" }
            table {
                tr {
                    th { "time" } th { "source" } th { "event" } th { "contact" } th { "events" }
                    th { "rules fired" } th { "operations" } th { "delivery" }
                }
                @for d in &view.decisions {
                    tr {
                        td { (time(d.at)) }
                        td { (d.source) }
                        td { (d.event_id.as_str()) }
                        td { (d.location_id.as_str()) " / " (d.contact_id.as_str()) }
                        td { (d.events.join(", ")) }
                        td { (d.rules.join(", ")) }
                        td { (d.operations) }
                        td { (d.delivery) }
                    }
                }
            }
            h2 { "Senders (last hour)" }
            (senders(&view.senders))
            h2 { "Dead letters" }
            (dead_letters(&view.dead_letters))
            h2 { "Reconcile" }
            (runs(&view.runs))
        },
    )
}

fn queue(stats: &Result<QueueStats, String>) -> Markup {
    html! {
        @match stats {
            Ok(stats) => table {
                tr { th { "ready contacts" } th { "leased contacts" } th { "pending operations" } th { "dead letters" } }
                tr { td { (stats.ready) } td { (stats.leased) } td { (stats.pending) } td { (stats.dead) } }
            },
            Err(e) => p.bad { "The queue is unavailable: " (e) },
        }
    }
}

fn location_row(location: &LocationView, now: Millis, daily_budget: u64) -> Markup {
    // A count from an earlier day is spent: the budget starts again at 0 each UTC day.
    let (today, next) = match &location.limiter {
        Ok(Some(limiter)) if limiter.day == now / DAY_MS => {
            let next = if limiter.tat > now { time(limiter.tat) } else { "now".to_owned() };
            (format!("{} of {daily_budget}", limiter.count), next)
        }
        Ok(_) => (format!("0 of {daily_budget}"), "now".to_owned()),
        Err(e) => (e.clone(), String::new()),
    };
    html! {
        tr {
            td { (location.id.as_str()) }
            td {
                @match &location.paused {
                    Ok(Some(pause)) => span.bad { "paused until " (time(pause.until)) " (" (pause.reason) ")" },
                    Ok(None) => span.ok { "delivering" },
                    Err(e) => (e),
                }
            }
            td { (today) }
            td { (next) }
        }
    }
}

fn dead_letters(letters: &Result<Vec<DeadLetter>, String>) -> Markup {
    html! {
        @match letters {
            Ok(letters) if letters.is_empty() => p.ok { "None." },
            Ok(letters) => table {
                tr {
                    th { "id" } th { "failed" } th { "contact" } th { "operations" } th { "status" } th { "reason" }
                }
                @for l in letters {
                    tr {
                        td { (l.id) }
                        td { (time(l.failed_at)) }
                        td { (l.location_id.as_str()) " / " (l.contact_id.as_str()) }
                        td { (l.operations.len()) }
                        td {
                            @match l.status {
                                Some(status) => (status),
                                None => "-",
                            }
                        }
                        td { (l.reason) }
                    }
                }
            },
            Err(e) => p.bad { (e) },
        }
    }
}

/// Each source's share of 2xx answers: GoHighLevel may pause a webhook URL that answers too few.
fn senders(senders: &[SourceShare]) -> Markup {
    html! {
        @if senders.is_empty() {
            p { "No webhook yet." }
        } @else {
            table {
                tr { th { "source" } th { "answered" } th { "2xx" } th { "" } }
                @for sender in senders {
                    tr {
                        td { (sender.source) }
                        td { (sender.answered) }
                        td { (format!("{:.1}%", sender.share() * 100.0)) }
                        td {
                            @if sender.warn() {
                                span.bad { "under " (format!("{:.0}%", WARN_UNDER * 100.0)) ": GoHighLevel may pause a URL that answers too few 2xx" }
                            } @else {
                                span.ok { "ok" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Each location's newest run: in progress, or its last result.
fn runs(runs: &Result<Vec<RunRecord>, String>) -> Markup {
    html! {
        @match runs {
            Ok(runs) if runs.is_empty() => p { "No run yet." },
            Ok(runs) => table {
                tr { th { "location" } th { "run" } th { "started" } th { "state" } th { "contacts read" } th { "changed" } th { "+" } th { "-" } }
                @for run in runs {
                    tr {
                        td { (run.location_id.as_str()) }
                        td { (run.id) }
                        td { (time(run.started_at)) }
                        td {
                            @match &run.state {
                                RunState::Running => span { "in progress" },
                                RunState::Done => span.ok { "done " (time(run.updated_at)) },
                                RunState::Failed(reason) => span.bad { "stopped: " (reason) },
                            }
                        }
                        td { (run.contacts_read) }
                        td { (run.contacts_changed) }
                        td { (run.adds) }
                        td { (run.removes) }
                    }
                }
            },
            Err(e) => p.bad { (e) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::outcome::Outcome;
    use crate::event::{ContactId, EventId};

    /// Markup a sender, the CRM or a rule file could put in a name, reason or error.
    const HOSTILE: &str = "<script>alert(1)</script>\"&'";
    const ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;'";

    fn location(id: &str) -> LocationId {
        LocationId::parse(id).unwrap()
    }

    fn view() -> StatusView {
        StatusView {
            now: 1_700_000_000_000,
            daily_budget: 194_000,
            rules: Summary { rules: 4, enabled: 4, files: 1, users: 2, teams: 1 },
            reload_error: None,
            queue: Ok(QueueStats { ready: 1, leased: 0, pending: 2, dead: 0 }),
            locations: Vec::new(),
            decisions: Vec::new(),
            dead_letters: Ok(Vec::new()),
            runs: Ok(Vec::new()),
            senders: Vec::new(),
            deleted_users: Ok(Vec::new()),
        }
    }

    #[test]
    fn deleted_users_show_with_the_rules_that_still_name_them_only_when_there_are_any() {
        let page = status(&view()).into_string();
        assert!(!page.contains("Users the CRM deleted"));
        let user = |id: &str| DeletedUser {
            user: crate::event::UserId::parse(id).unwrap(),
            location: None,
            at: 1_700_000_000_000,
            name: Some(HOSTILE.to_owned()),
            email: None,
        };
        let listed = vec![
            DeletedUserView { user: user("usr_gone"), rules: vec!["leads".into(), "cover alice by usr_gone".into()] },
            DeletedUserView { user: user("usr_x"), rules: vec![] },
        ];
        let page = status(&StatusView { deleted_users: Ok(listed), ..view() }).into_string();
        assert!(page.contains("Users the CRM deleted"), "{page}");
        assert!(page.contains("<td class=\"bad\">leads, cover alice by usr_gone</td>"), "{page}");
        assert!(page.contains("<td class=\"ok\">none</td>"), "{page}");
        assert!(page.contains(ESCAPED) && !page.contains(HOSTILE), "names are escaped");
    }

    fn decision(text: &str) -> Decision {
        Decision {
            at: 1_700_000_000_000,
            source: text.to_owned(),
            event_id: EventId::parse(text).unwrap(),
            location_id: location(text),
            contact_id: ContactId::parse(text).unwrap(),
            events: vec![format!("tag_added {text}")],
            rules: vec![text.to_owned()],
            operations: 2,
            delivery: Outcome::DeadLettered(text.to_owned()),
        }
    }

    fn letter(reason: &str) -> DeadLetter {
        DeadLetter {
            id: "0-abc".to_owned(),
            location_id: location("loc-1"),
            contact_id: ContactId::parse("c-1").unwrap(),
            operations: Vec::new(),
            status: Some(422),
            reason: reason.to_owned(),
            failed_at: 1_700_000_000_000,
        }
    }

    /// The hostile text appears only escaped: as many times as it was put in, and never as markup.
    fn assert_escaped(html: &str, times: usize) {
        assert!(!html.contains("<script>"), "unescaped markup in:\n{html}");
        assert_eq!(html.matches(ESCAPED).count(), times, "escaped text in:\n{html}");
    }

    #[test]
    fn a_decision_with_markup_in_every_field_is_shown_escaped() {
        let page = status(&StatusView { decisions: vec![decision(HOSTILE)], ..view() }).into_string();
        // source, event, location, contact, events, rules, delivery
        assert_escaped(&page, 7);
        assert!(page.contains(&format!("dead-lettered: {ESCAPED}")));
    }

    #[test]
    fn a_rule_error_with_markup_is_shown_escaped() {
        let page = status(&StatusView { reload_error: Some(format!("rules/vip.toml:1:1: {HOSTILE}")), ..view() })
            .into_string();
        assert_escaped(&page, 1);
        assert!(page.contains("Last reload failed; the previous rules still serve:"));
        assert!(!page.contains("Last reload: ok."));
    }

    #[test]
    fn a_dead_letter_reason_and_store_errors_with_markup_are_shown_escaped() {
        let page = status(&StatusView { dead_letters: Ok(vec![letter(HOSTILE)]), ..view() }).into_string();
        assert_escaped(&page, 1);
        assert!(page.contains("<td>422</td>"));

        let page = status(&StatusView {
            queue: Err(HOSTILE.to_owned()),
            dead_letters: Err(HOSTILE.to_owned()),
            locations: vec![LocationView {
                id: location("loc-1"),
                paused: Ok(Some(Pause { until: 1_700_000_060_000, reason: HOSTILE.to_owned() })),
                limiter: Err(HOSTILE.to_owned()),
            }],
            ..view()
        })
        .into_string();
        assert_escaped(&page, 4);
        assert!(page.contains("The queue is unavailable: "));
    }

    #[test]
    fn a_location_shows_todays_calls_against_the_budget_and_yesterdays_as_spent() {
        let now = view().now;
        let today = LimiterState { tat: now - 1, day: now / DAY_MS, count: 2 };
        let yesterday = LimiterState { day: now / DAY_MS - 1, ..today };
        let row = |limiter| {
            let locations = vec![LocationView { id: location("loc-1"), paused: Ok(None), limiter: Ok(limiter) }];
            status(&StatusView { locations, ..view() }).into_string()
        };
        let page = row(Some(today));
        assert!(page.contains("<td>2 of 194000</td><td>now</td>"), "{page}");
        assert!(page.contains("<span class=\"ok\">delivering</span>"));
        assert!(row(Some(yesterday)).contains("<td>0 of 194000</td>"));
        assert!(row(None).contains("<td>0 of 194000</td>"));
    }

    #[test]
    fn the_login_form_posts_the_token_to_login_and_says_when_it_was_wrong() {
        let form = login(false).into_string();
        assert!(form.contains("<form method=\"post\" action=\"/login\">"), "{form}");
        assert!(form.contains("<input type=\"password\" name=\"token\" autocomplete=\"current-password\">"));
        assert!(!form.contains("not the admin token"));
        assert!(login(true).into_string().contains("That token is not the admin token."));
    }
}
