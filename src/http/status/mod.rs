//! `GET /`: a read-only status page, rendered on the server (no JavaScript): the rules and the last reload, the
//! queue, paused locations, the last decisions (event → rules → operations → delivery) and the dead letters.
//!
//! With `admin.token` set, the page needs it: `Authorization: Bearer <token>`, or the login form, which sets a
//! cookie holding a hash of the token (never the token itself). Without one, only loopback may look.
//!
//! This file decides who may look and gathers the values ([`gather`]); `page.rs` turns them into HTML.

mod page;

use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::decisions::Decisions;
use crate::domain::clock::now_ms;
use crate::domain::outcome::Outcome;
use crate::queue::Stores;
use crate::rules::LiveRules;
use page::{DeletedUserView, LocationView, StatusView};

const COOKIE: &str = "followd_admin";

pub struct StatusState {
    pub stores: Stores,
    pub rules: Arc<LiveRules>,
    pub decisions: Arc<Decisions>,
    pub admin_token: Option<SecretString>,
    /// Calls per location per day the limiter allows, to show beside today's count.
    pub daily_budget: u64,
    /// What each webhook source was answered over the last hour (this process).
    pub answers: Arc<super::answers::Answers>,
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

/// For the JSON routes the status page's protection covers (`/reconcile`): the refusal, if the request is not
/// let in.
pub(crate) fn refusal(request: &HttpRequest, state: &StatusState) -> Option<HttpResponse> {
    match access(request, state) {
        Access::Granted => None,
        Access::Login => Some(HttpResponse::Unauthorized().json(serde_json::json!({
            "error": "unauthorized",
            "message": "send the admin token: Authorization: Bearer <admin.token>"
        }))),
        Access::LoopbackOnly => Some(HttpResponse::Forbidden().json(serde_json::json!({
            "error": "forbidden",
            "message": "served to loopback only; set admin.token to open it to others"
        }))),
    }
}

/// An HTML answer.
fn html(status: StatusCode, markup: maud::Markup) -> HttpResponse {
    HttpResponse::build(status).content_type("text/html; charset=utf-8").body(markup.into_string())
}

/// The login form, answered with 401: the page needs the admin token.
fn login_form(failed: bool) -> HttpResponse {
    html(StatusCode::UNAUTHORIZED, page::login(failed))
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
    html(StatusCode::OK, page::status(&gather(&state).await))
}

/// Reads what the page shows from the rules, the queue's store and this process's decisions. The one place
/// that asks the stores: the page itself ([`page::status`]) is pure. A store that fails leaves its error in
/// the view, so the rest of the page still shows.
async fn gather(state: &StatusState) -> StatusView {
    let rules = state.rules.current().summary();
    let reload_error = state.rules.status().last_error;
    let queue = state.stores.queue.stats().await.map_err(|e| e.to_string());
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
    let mut location_ids: Vec<_> = decisions.iter().map(|d| d.location_id.clone()).collect();
    location_ids.sort();
    location_ids.dedup();
    let now = now_ms();
    let mut locations = Vec::with_capacity(location_ids.len());
    for id in location_ids {
        let paused = state.stores.locations.paused(&id, now).await.map_err(|e| e.to_string());
        let limiter = state.stores.locations.limiter_state(&id).await.map_err(|e| e.to_string());
        locations.push(LocationView { id, paused, limiter });
    }
    let dead_letters = state.stores.queue.dead_letters().await.map_err(|e| e.to_string());
    // Each location's newest run.
    let runs = state.stores.runs.runs().await.map_err(|e| e.to_string()).map(|runs| {
        let mut newest: std::collections::BTreeMap<_, _> = std::collections::BTreeMap::new();
        for run in runs {
            newest.insert(run.location_id.clone(), run);
        }
        let mut runs: Vec<_> = newest.into_values().collect();
        runs.sort_by_key(|run| run.started_at);
        runs
    });
    let current = state.rules.current();
    let deleted_users = state.stores.roster.deleted_users().await.map_err(|e| e.to_string()).map(|users| {
        users.into_iter().map(|user| DeletedUserView { rules: current.rules_naming(&user.user), user }).collect()
    });
    StatusView {
        now,
        deleted_users,
        daily_budget: state.daily_budget,
        rules,
        reload_error,
        queue,
        locations,
        decisions,
        dead_letters,
        runs,
        senders: state.answers.last_hour(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state over an empty embedded queue and an empty rules directory; the directories live as long as it.
    fn state(admin_token: Option<&str>) -> (StatusState, [tempfile::TempDir; 2]) {
        let (data, rules) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let state = StatusState {
            stores: Stores::of(
                crate::queue::EmbeddedQueue::open(
                    data.path(),
                    std::time::Duration::from_secs(60),
                    std::time::Duration::from_secs(60),
                )
                .unwrap(),
            ),
            rules: LiveRules::load(rules.path()).unwrap(),
            decisions: Arc::default(),
            admin_token: admin_token.map(SecretString::from),
            daily_budget: 1,
            answers: Arc::default(),
        };
        (state, [data, rules])
    }

    #[test]
    fn without_a_token_only_loopback_may_look() {
        let (state, _dirs) = state(None);
        let from = |ip: &str| {
            let request = actix_web::test::TestRequest::default().peer_addr(format!("{ip}:5000").parse().unwrap());
            access(&request.to_http_request(), &state)
        };
        assert!(matches!(from("127.0.0.1"), Access::Granted));
        assert!(matches!(from("10.1.2.3"), Access::LoopbackOnly));
    }

    #[tokio::test]
    async fn with_a_token_the_page_answers_the_login_form_until_the_bearer_is_given() {
        let (state, _dirs) = state(Some("adm-secret"));
        let state = web::Data::new(state);
        let loopback = || actix_web::test::TestRequest::default().peer_addr("127.0.0.1:5000".parse().unwrap());
        let body = |response: HttpResponse| async move {
            let bytes = actix_web::body::to_bytes(response.into_body()).await.unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        };

        let anonymous = status(loopback().to_http_request(), state.clone()).await;
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        let form = body(anonymous).await;
        assert!(form.contains("<form method=\"post\" action=\"/login\">"), "{form}");
        assert!(!form.contains("Recent decisions"));

        let bearer = loopback().insert_header((header::AUTHORIZATION, "Bearer adm-secret")).to_http_request();
        let granted = status(bearer, state).await;
        assert_eq!(granted.status(), StatusCode::OK);
        let page = body(granted).await;
        assert!(page.contains("Last reload: ok.") && page.contains("Recent decisions"), "{page}");
        assert!(!page.contains("<form"));
    }

    #[test]
    fn the_cookie_is_not_the_token() {
        let token = SecretString::from("s3cret");
        assert!(!cookie_value(&token).contains("s3cret"));
        assert_eq!(cookie_value(&token).len(), 64);
    }
}
