//! `GET /`: a read-only status page, rendered on the server (no JavaScript): the rules and the last reload, the
//! queue, paused locations, the last decisions (event → rules → operations → delivery) and the dead letters.
//!
//! With `admin.token` set, the page needs it: `Authorization: Bearer <token>`, or the login form, which sets a
//! cookie holding a hash of the token (never the token itself). Without one, only loopback may look.

use std::fmt::Write as _;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::decisions::Decisions;
use crate::domain::clock::now_ms;
use crate::domain::outcome::Outcome;
use crate::queue::Stores;
use crate::rules::LiveRules;

const COOKIE: &str = "followd_admin";

pub struct StatusState {
    pub stores: Stores,
    pub rules: Arc<LiveRules>,
    pub decisions: Arc<Decisions>,
    pub admin_token: Option<SecretString>,
    /// Calls per location per day the limiter allows, to show beside today's count.
    pub daily_budget: u64,
}

/// Text made safe for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the cookie holds: a hash of the token, so a leaked cookie does not reveal it.
fn cookie_value(token: &SecretString) -> String {
    hex::encode(Sha256::digest(format!("followd-admin-cookie:{}", token.expose_secret())))
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

enum Access {
    Granted,
    /// Show the login form.
    Login,
    /// No token is configured and the request is not from loopback.
    LoopbackOnly,
}

fn access(request: &HttpRequest, state: &StatusState) -> Access {
    let Some(token) = &state.admin_token else {
        let loopback = request.peer_addr().is_some_and(|peer| peer.ip().is_loopback());
        return if loopback { Access::Granted } else { Access::LoopbackOnly };
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| equal(given.trim().as_bytes(), token.expose_secret().as_bytes()));
    let cookie = request.cookie(COOKIE).is_some_and(|c| equal(c.value().as_bytes(), cookie_value(token).as_bytes()));
    if bearer || cookie { Access::Granted } else { Access::Login }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;\
margin-bottom:1.5rem}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;font-size:.9rem}\
th{background:#f3f3f3}.ok{color:#17692b}.bad{color:#a11}pre{background:#fbeaea;padding:.6rem}";

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{STYLE}</style></head><body>{body}</body></html>"
    ))
}

fn login_form(failed: bool) -> HttpResponse {
    let note = if failed { "<p class=\"bad\">That token is not the admin token.</p>" } else { "" };
    let body = format!(
        "<h1>followd</h1>{note}<form method=\"post\" action=\"/login\"><label>Admin token \
         <input type=\"password\" name=\"token\" autocomplete=\"current-password\"></label> \
         <button type=\"submit\">Sign in</button></form>"
    );
    let mut response = page("followd: sign in", &body);
    *response.status_mut() = actix_web::http::StatusCode::UNAUTHORIZED;
    response
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /login`: the form's token, checked; a cookie holding its hash on success.
pub async fn login(form: web::Form<LoginForm>, state: web::Data<StatusState>) -> HttpResponse {
    match &state.admin_token {
        Some(token) if equal(form.token.as_bytes(), token.expose_secret().as_bytes()) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/"))
            .cookie(
                actix_web::cookie::Cookie::build(COOKIE, cookie_value(token))
                    .path("/")
                    .http_only(true)
                    .same_site(actix_web::cookie::SameSite::Strict)
                    .finish(),
            )
            .finish(),
        Some(_) => login_form(true),
        None => HttpResponse::SeeOther().insert_header((header::LOCATION, "/")).finish(),
    }
}

fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// `GET /`.
pub async fn status(request: HttpRequest, state: web::Data<StatusState>) -> HttpResponse {
    match access(&request, &state) {
        Access::Granted => {}
        Access::Login => return login_form(false),
        Access::LoopbackOnly => {
            return HttpResponse::Forbidden().json(serde_json::json!({
                "error": "forbidden",
                "message": "the status page is served to loopback only; set admin.token to open it to others"
            }));
        }
    }
    let mut html = String::from("<h1>followd</h1>");
    let rules = state.rules.current();
    let reload = state.rules.status();
    let _ = write!(html, "<h2>Rules</h2><p>{}</p>", escape(&rules.summary().to_string()));
    match &reload.last_error {
        None => html.push_str("<p class=\"ok\">Last reload: ok.</p>"),
        Some(errors) => {
            let _ = write!(
                html,
                "<p class=\"bad\">Last reload failed; the previous rules still serve:</p><pre>{}</pre>",
                escape(errors)
            );
        }
    }
    html.push_str("<h2>Queue</h2>");
    match state.stores.queue.stats().await {
        Ok(stats) => {
            let _ = write!(
                html,
                "<table><tr><th>ready contacts</th><th>leased contacts</th><th>pending operations</th>\
                 <th>dead letters</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
                stats.ready, stats.leased, stats.pending, stats.dead
            );
        }
        Err(e) => {
            let _ = write!(html, "<p class=\"bad\">The queue is unavailable: {}</p>", escape(&e.to_string()));
        }
    }
    let mut decisions = state.decisions.snapshot();
    // Workers running as other processes note their results in the queue's store; fill in what this process's
    // own workers did not report. Without the store the page still shows what this process knows.
    let unknown: Vec<usize> = if state.stores.outcomes.is_shared() {
        (0..decisions.len()).filter(|&i| decisions[i].delivery == Outcome::Queued).collect()
    } else {
        Vec::new()
    };
    let asked: Vec<_> =
        unknown.iter().map(|&i| (decisions[i].location_id.clone(), decisions[i].event_id.clone())).collect();
    if let Ok(outcomes) = state.stores.outcomes.outcomes(&asked).await {
        for (&i, outcome) in unknown.iter().zip(outcomes) {
            if let Some(outcome) = outcome {
                decisions[i].delivery = outcome;
            }
        }
    }
    let mut locations: Vec<_> = decisions.iter().map(|d| d.location_id.clone()).collect();
    locations.sort();
    locations.dedup();
    html.push_str(
        "<h2>Locations</h2><table><tr><th>location</th><th>state</th><th>calls today</th><th>next free slot</th></tr>",
    );
    for location in &locations {
        let now = now_ms();
        let state_text = match state.stores.locations.paused(location, now).await {
            Ok(Some(pause)) => {
                format!("<span class=\"bad\">paused until {} ({})</span>", time(pause.until), escape(&pause.reason))
            }
            Ok(None) => "<span class=\"ok\">delivering</span>".to_owned(),
            Err(e) => escape(&e.to_string()),
        };
        let (today, next) = match state.stores.locations.limiter_state(location).await {
            Ok(Some(limiter)) if limiter.day == now / 86_400_000 => {
                let next = if limiter.tat > now { time(limiter.tat) } else { "now".to_owned() };
                (format!("{} of {}", limiter.count, state.daily_budget), next)
            }
            Ok(_) => (format!("0 of {}", state.daily_budget), "now".to_owned()),
            Err(e) => (escape(&e.to_string()), String::new()),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{state_text}</td><td>{today}</td><td>{next}</td></tr>",
            escape(location.as_str())
        );
    }
    html.push_str(
        "</table><h2>Recent decisions</h2><table><tr><th>time</th><th>source</th><th>event</th>\
                   <th>contact</th><th>events</th><th>rules fired</th><th>operations</th><th>delivery</th></tr>",
    );
    for d in &decisions {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(d.at),
            escape(&d.source),
            escape(d.event_id.as_str()),
            escape(d.location_id.as_str()),
            escape(d.contact_id.as_str()),
            escape(&d.events.join(", ")),
            escape(&d.rules.join(", ")),
            d.operations,
            escape(&d.delivery.to_string())
        );
    }
    html.push_str("</table><h2>Dead letters</h2>");
    match state.stores.queue.dead_letters().await {
        Ok(letters) if letters.is_empty() => html.push_str("<p class=\"ok\">None.</p>"),
        Ok(letters) => {
            html.push_str("<table><tr><th>id</th><th>failed</th><th>contact</th><th>operations</th><th>status</th><th>reason</th></tr>");
            for l in &letters {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&l.id),
                    time(l.failed_at),
                    escape(l.location_id.as_str()),
                    escape(l.contact_id.as_str()),
                    l.operations.len(),
                    l.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                    escape(&l.reason)
                );
            }
            html.push_str("</table>");
        }
        Err(e) => {
            let _ = write!(html, "<p class=\"bad\">{}</p>", escape(&e.to_string()));
        }
    }
    page("followd status", &html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<script>\"&'"), "&lt;script&gt;&quot;&amp;&#39;");
    }

    #[test]
    fn without_a_token_only_loopback_may_look() {
        let state = StatusState {
            stores: Stores::of(
                crate::queue::EmbeddedQueue::open(
                    tempfile::tempdir().unwrap().path(),
                    std::time::Duration::from_secs(60),
                    std::time::Duration::from_secs(60),
                )
                .unwrap(),
            ),
            rules: LiveRules::load(tempfile::tempdir().unwrap().path()).unwrap(),
            decisions: Arc::default(),
            admin_token: None,
            daily_budget: 1,
        };
        let from = |ip: &str| {
            let request = actix_web::test::TestRequest::default().peer_addr(format!("{ip}:5000").parse().unwrap());
            access(&request.to_http_request(), &state)
        };
        assert!(matches!(from("127.0.0.1"), Access::Granted));
        assert!(matches!(from("10.1.2.3"), Access::LoopbackOnly));
    }

    #[test]
    fn the_cookie_is_not_the_token() {
        let token = SecretString::from("s3cret");
        assert!(!cookie_value(&token).contains("s3cret"));
        assert_eq!(cookie_value(&token).len(), 64);
    }
}
