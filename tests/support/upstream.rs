//! A fake CRM (GoHighLevel's contacts API) on a free loopback port, behaving as `shared/ghl/API.md` says:
//! `POST /contacts/{id}/followers` → 201 with `followers`/`followersAdded`, `DELETE` → 200 with
//! `followers`/`followersRemoved`, `GET /contacts/{id}` → 200 `{"contact":{...}}`; 401 for a wrong token,
//! 400 without `Version: 2021-07-28`, 422 for a malformed body, the rate-limit headers on every answer and 429
//! past its own limit. It keeps followers per contact, records every call, can be told to fail the next calls,
//! and counts calls for one contact that overlap in time (which followd must never make).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const TOKEN: &str = "test-upstream-token";
/// A pipeline for [`FakeUpstream::set_pipelines`]: id, name, and its stages' ids and names.
pub type PipelineSpec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
pub const CLIENT_ID: &str = "test-client";
pub const CLIENT_SECRET: &str = "test-client-secret";

/// One call the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub contact_id: String,
    pub followers: Vec<String>,
    pub authorization: Option<String>,
    pub version: Option<String>,
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    followers: HashMap<String, BTreeSet<String>>,
    calls: Vec<Call>,
    /// Statuses to answer the next calls with, instead of serving them.
    scripted: VecDeque<u16>,
    /// Statuses to answer the next calls for one contact with.
    scripted_for: HashMap<String, VecDeque<u16>>,
    /// `Retry-After` sent with a scripted 429, in seconds.
    retry_after: u64,
    omit_followers_in_get: bool,
    in_flight: HashMap<String, usize>,
    overlaps: usize,
    window_start: Option<Instant>,
    window_calls: u32,
    /// Calls accepted per window and the window's length.
    limit: Option<(u32, Duration)>,
    /// How long each call takes to answer.
    latency: Duration,
    /// OAuth: refresh tokens still valid (each is spent by its refresh), access tokens and their expiry.
    refresh_tokens: std::collections::HashSet<String>,
    access_tokens: HashMap<String, Instant>,
    oauth_expires_in: u64,
    issued: u32,
    /// `GET /opportunities/pipelines` answers, per location.
    pipelines: HashMap<String, Value>,
}

struct State {
    inner: Mutex<Inner>,
    changed: Notify,
}

pub struct FakeUpstream {
    pub url: String,
    state: Arc<State>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeUpstream {
    /// Starts with the CRM's documented burst limit, 100 calls per 10 seconds.
    pub async fn start() -> Self {
        let state = Arc::new(State {
            inner: Mutex::new(Inner {
                limit: Some((100, Duration::from_secs(10))),
                oauth_expires_in: 86_399,
                ..Inner::default()
            }),
            changed: Notify::new(),
        });
        let data = web::Data::from(Arc::clone(&state));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake upstream");
        let port = listener.local_addr().expect("local addr").port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .route("/contacts/{id}/followers", web::post().to(change))
                .route("/contacts/{id}/followers", web::delete().to(change))
                .route("/contacts/{id}", web::get().to(get_contact))
                .route("/oauth/token", web::post().to(oauth_token))
                .route("/opportunities/pipelines", web::get().to(get_pipelines))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { url: format!("http://127.0.0.1:{port}"), state, handle }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers the next `count` calls with `status` (and the CRM's error body for it).
    pub fn fail_next(&self, status: u16, count: usize) {
        self.inner().scripted.extend(std::iter::repeat_n(status, count));
    }

    /// The location's pipelines: `(pipeline id, name, [(stage id, name)])`.
    pub fn set_pipelines(&self, location: &str, pipelines: &[PipelineSpec<'_>]) {
        let pipelines: Vec<Value> = pipelines
            .iter()
            .map(|(id, name, stages)| {
                let stages: Vec<Value> = stages.iter().map(|(id, name)| json!({"id": id, "name": name})).collect();
                json!({"id": id, "name": name, "stages": stages, "locationId": location})
            })
            .collect();
        self.inner().pipelines.insert(location.to_owned(), json!({ "pipelines": pipelines }));
    }

    /// A refresh token the fake accepts once, as an app install's would be.
    pub fn oauth_seed(&self) -> String {
        let mut inner = self.inner();
        inner.issued += 1;
        let token = format!("rt-seed-{}", inner.issued);
        inner.refresh_tokens.insert(token.clone());
        token
    }

    /// The `expires_in` the token endpoint answers, in seconds.
    pub fn set_oauth_expires_in(&self, seconds: u64) {
        self.inner().oauth_expires_in = seconds;
    }

    /// Every access token issued so far stops working (the CRM answers 401 to them).
    pub fn revoke_access_tokens(&self) {
        self.inner().access_tokens.clear();
    }

    /// Answers the next `count` calls for `contact` with `status`.
    pub fn fail_contact(&self, contact: &str, status: u16, count: usize) {
        self.inner().scripted_for.entry(contact.to_owned()).or_default().extend(std::iter::repeat_n(status, count));
    }

    /// The `Retry-After` (seconds) a scripted 429 carries.
    pub fn set_retry_after(&self, seconds: u64) {
        self.inner().retry_after = seconds;
    }

    /// The most calls that arrived within any `window`, and how many were answered 429.
    pub fn busiest_window(&self, window: Duration) -> (usize, usize) {
        let calls = self.calls();
        let mut times: Vec<Instant> = calls.iter().map(|c| c.at).collect();
        times.sort();
        let busiest = (0..times.len())
            .map(|i| times[i..].iter().take_while(|&&t| t.duration_since(times[i]) < window).count())
            .max()
            .unwrap_or(0);
        (busiest, calls.iter().filter(|c| c.status == 429).count())
    }

    /// GET answers without a `followers` field, as the documented schema has none (`API.md` §3).
    pub fn omit_followers_in_get(&self) {
        self.inner().omit_followers_in_get = true;
    }

    pub fn set_followers(&self, contact: &str, users: &[&str]) {
        self.inner().followers.insert(contact.to_owned(), users.iter().map(|u| (*u).to_owned()).collect());
    }

    /// The fake's own rate limit: `None` turns it off.
    pub fn set_limit(&self, limit: Option<(u32, Duration)>) {
        self.inner().limit = limit;
    }

    pub fn set_latency(&self, latency: Duration) {
        self.inner().latency = latency;
    }

    pub fn followers_of(&self, contact: &str) -> BTreeSet<String> {
        self.inner().followers.get(contact).cloned().unwrap_or_default()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner().calls.clone()
    }

    pub fn calls_for(&self, contact: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.contact_id == contact).collect()
    }

    /// Calls being served right now.
    pub fn in_flight(&self) -> usize {
        self.inner().in_flight.values().sum()
    }

    /// Calls for one contact that were in flight at the same time.
    pub fn overlaps(&self) -> usize {
        self.inner().overlaps
    }

    /// Waits until at least `n` calls were received; false at the deadline.
    pub async fn wait_for_calls(&self, n: usize, deadline: Duration) -> bool {
        self.wait_until(deadline, |inner| inner.calls.len() >= n).await
    }

    /// Waits until `contact`'s followers are exactly `users`.
    pub async fn wait_for_followers(&self, contact: &str, users: &[&str], deadline: Duration) -> bool {
        let want: BTreeSet<String> = users.iter().map(|u| (*u).to_owned()).collect();
        self.wait_until(deadline, |inner| inner.followers.get(contact).cloned().unwrap_or_default() == want).await
    }

    async fn wait_until(&self, deadline: Duration, condition: impl Fn(&Inner) -> bool) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.state.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if condition(&self.inner()) {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return condition(&self.inner());
            }
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        let stop = self.handle.stop(false);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(stop);
        }
    }
}

fn header(request: &HttpRequest, name: &str) -> Option<String> {
    request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn error_body(status: u16) -> Value {
    match status {
        401 => json!({"statusCode": 401, "message": "Invalid token: access token is invalid", "error": "Unauthorized"}),
        422 => json!({"statusCode": 422, "message": ["followers must be an array"], "error": "Unprocessable Entity"}),
        429 => json!({"statusCode": 429, "message": "Too Many Requests"}),
        404 => json!({"statusCode": 404, "message": "Contact not found"}),
        400 => json!({"statusCode": 400, "message": "Bad Request"}),
        _ => json!({"statusCode": status, "message": "Internal Server Error"}),
    }
}

/// Checks what every call must carry and applies the rate limit; `Err` is the answer to send instead.
fn admit(state: &State, request: &HttpRequest, contact: &str) -> Result<(u32, u32, Duration), Box<HttpResponse>> {
    let mut inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
    let for_contact = inner.scripted_for.get_mut(contact).and_then(VecDeque::pop_front);
    if let Some(status) = for_contact.or_else(|| inner.scripted.pop_front()) {
        let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default());
        if status == 429 {
            response.insert_header(("Retry-After", inner.retry_after.max(1).to_string()));
        }
        return Err(Box::new(response.json(error_body(status))));
    }
    let authorization = header(request, "authorization").unwrap_or_default();
    let bearer = authorization.strip_prefix("Bearer ").unwrap_or_default();
    let oauth_valid = inner.access_tokens.get(bearer).is_some_and(|expiry| *expiry > Instant::now());
    if bearer != TOKEN && !oauth_valid {
        return Err(Box::new(HttpResponse::Unauthorized().json(error_body(401))));
    }
    if header(request, "version").as_deref() != Some("2021-07-28") {
        let body = json!({"statusCode": 400, "message": "version header is required"});
        return Err(Box::new(HttpResponse::BadRequest().json(body)));
    }
    let Some((max, window)) = inner.limit else { return Ok((u32::MAX, u32::MAX, Duration::from_secs(10))) };
    let now = Instant::now();
    if inner.window_start.is_none_or(|start| now.duration_since(start) >= window) {
        inner.window_start = Some(now);
        inner.window_calls = 0;
    }
    inner.window_calls += 1;
    if inner.window_calls > max {
        let mut response = HttpResponse::TooManyRequests();
        rate_headers(&mut response, max, 0, window);
        return Err(Box::new(response.json(error_body(429))));
    }
    Ok((max, max - inner.window_calls, window))
}

fn rate_headers(response: &mut actix_web::HttpResponseBuilder, max: u32, remaining: u32, window: Duration) {
    response
        .insert_header(("X-RateLimit-Max", max.to_string()))
        .insert_header(("X-RateLimit-Remaining", remaining.to_string()))
        .insert_header(("X-RateLimit-Interval-Milliseconds", window.as_millis().to_string()))
        .insert_header(("X-RateLimit-Limit-Daily", "200000"))
        .insert_header(("X-RateLimit-Daily-Remaining", "199000"));
}

fn record(state: &State, request: &HttpRequest, contact: &str, followers: Vec<String>, status: u16, at: Instant) {
    let mut inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
    inner.calls.push(Call {
        method: request.method().to_string(),
        contact_id: contact.to_owned(),
        followers,
        authorization: header(request, "authorization"),
        version: header(request, "version"),
        status,
        at,
    });
    drop(inner);
    state.changed.notify_waiters();
}

async fn change(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<State>,
) -> HttpResponse {
    let contact = path.into_inner();
    let at = Instant::now();
    let parsed: Option<Vec<String>> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("followers").cloned())
        .and_then(|f| serde_json::from_value(f).ok());
    let followers = parsed.clone().unwrap_or_default();
    let (max, remaining, window) = match admit(&state, &request, &contact) {
        Ok(limits) => limits,
        Err(response) => {
            record(&state, &request, &contact, followers, response.status().as_u16(), at);
            return *response;
        }
    };
    let Some(users) = parsed else {
        record(&state, &request, &contact, followers, 422, at);
        return HttpResponse::UnprocessableEntity().json(error_body(422));
    };
    let latency = {
        let mut inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        let count = inner.in_flight.entry(contact.clone()).or_default();
        *count += 1;
        if *count > 1 {
            inner.overlaps += 1;
        }
        inner.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let add = request.method() == actix_web::http::Method::POST;
    let (after, changed) = {
        let mut inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = inner.in_flight.get_mut(&contact) {
            *count -= 1;
        }
        let set = inner.followers.entry(contact.clone()).or_default();
        let changed: Vec<String> = if add {
            users.iter().filter(|u| set.insert((*u).clone())).cloned().collect()
        } else {
            users.iter().filter(|u| set.remove(*u)).cloned().collect()
        };
        (set.iter().cloned().collect::<Vec<_>>(), changed)
    };
    let status = if add { 201 } else { 200 };
    record(&state, &request, &contact, users, status, at);
    let mut response = if add { HttpResponse::Created() } else { HttpResponse::Ok() };
    rate_headers(&mut response, max, remaining, window);
    let delta = if add { "followersAdded" } else { "followersRemoved" };
    response.json(json!({ "followers": after, delta: changed }))
}

async fn get_contact(request: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> HttpResponse {
    let contact = path.into_inner();
    let at = Instant::now();
    if let Err(response) = admit(&state, &request, &contact) {
        record(&state, &request, &contact, Vec::new(), response.status().as_u16(), at);
        return *response;
    }
    let (followers, omit) = {
        let inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.followers.get(&contact).cloned().unwrap_or_default(), inner.omit_followers_in_get)
    };
    record(&state, &request, &contact, Vec::new(), 200, at);
    let mut body = json!({ "contact": { "id": contact, "tags": [] } });
    if !omit {
        body["contact"]["followers"] = json!(followers);
    }
    HttpResponse::Ok().json(body)
}

/// `POST /oauth/token` (form-encoded, `grant_type=refresh_token`): spends the refresh token, issues a new pair.
async fn oauth_token(
    request: HttpRequest,
    form: web::Form<HashMap<String, String>>,
    state: web::Data<State>,
) -> HttpResponse {
    let at = Instant::now();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let answer = {
        let mut inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        let credentials = field("client_id") == CLIENT_ID && field("client_secret") == CLIENT_SECRET;
        if !credentials
            || field("grant_type") != "refresh_token"
            || !inner.refresh_tokens.remove(field("refresh_token"))
        {
            None
        } else {
            inner.issued += 1;
            let (access, refresh) = (format!("at-{}", inner.issued), format!("rt-{}", inner.issued));
            let lifetime = Duration::from_secs(inner.oauth_expires_in);
            inner.access_tokens.insert(access.clone(), at + lifetime);
            inner.refresh_tokens.insert(refresh.clone());
            Some(json!({"access_token": access, "token_type": "Bearer", "expires_in": inner.oauth_expires_in,
                        "refresh_token": refresh, "scope": "contacts.write", "userType": "Location"}))
        }
    };
    let status = if answer.is_some() { 200 } else { 401 };
    record(&state, &request, "oauth", Vec::new(), status, at);
    match answer {
        Some(body) => HttpResponse::Ok().json(body),
        None => HttpResponse::Unauthorized().json(json!({"error": "invalid_grant"})),
    }
}

/// `GET /opportunities/pipelines?locationId=...`.
async fn get_pipelines(
    request: HttpRequest,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<State>,
) -> HttpResponse {
    let at = Instant::now();
    let location = query.get("locationId").cloned().unwrap_or_default();
    if let Err(response) = admit(&state, &request, "pipelines") {
        record(&state, &request, "pipelines", Vec::new(), response.status().as_u16(), at);
        return *response;
    }
    let body = {
        let inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.pipelines.get(&location).cloned().unwrap_or_else(|| json!({ "pipelines": [] }))
    };
    record(&state, &request, "pipelines", Vec::new(), 200, at);
    HttpResponse::Ok().json(body)
}
