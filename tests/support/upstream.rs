//! A fake CRM (GoHighLevel's contacts API) on a free loopback port, behaving as `shared/ghl/API.md` says:
//! `POST /contacts/{id}/followers` → 201 with `followers`/`followersAdded`, `DELETE` → 200 with
//! `followers`/`followersRemoved` (the added/removed lists hold only the users that changed),
//! `GET /contacts/{id}` → 200 `{"contact":{...}}` *without* `followers` (the CRM's schema has none, §3),
//! `POST /contacts/search` → the contacts of one location with their followers, tags and source, page by page
//! (`DESIGN.md` "Reading the CRM"); 401 for a wrong token, the rate-limit headers on every answer and 429 past
//! its own limit.
//!
//! Every request is checked against the CRM's own OpenAPI files ([`super::openapi`]): what they refuse is
//! answered as the CRM would (400 for the `Version` header, 422 for a body or query) and kept as a violation;
//! a fake dropped with violations fails the test (see [`FakeUpstream::violations`]).
//!
//! It keeps per contact its location, followers, tags, source and dates, records every call, can be told to
//! fail the next calls, and counts calls for one contact that overlap in time (which followd must never make).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::openapi;

pub const TOKEN: &str = "test-upstream-token";
/// A pipeline for [`FakeUpstream::set_pipelines`]: id, name, and its stages' ids and names.
pub type PipelineSpec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
pub const CLIENT_ID: &str = "test-client";
pub const CLIENT_SECRET: &str = "test-client-secret";
/// The location of a contact the fake learnt of only through a followers call or [`FakeUpstream::set_followers`]:
/// the one the tests' webhooks name.
pub const DEFAULT_LOCATION: &str = "loc-1";
/// The `contact_id` of a recorded search, whose `method` is `"SEARCH"`.
pub const SEARCH: &str = "search";
/// The contacts' clock starts at 2026-01-01T00:00:00Z and moves one second per change, so that `dateAdded`
/// orders contacts by creation and the search cursor is deterministic.
const EPOCH_MS: i64 = 1_767_225_600_000;
/// Search page size when the body names none, and the largest the CRM serves (its search docs).
const DEFAULT_PAGE_LIMIT: u64 = 20;
const MAX_PAGE_LIMIT: u64 = 500;

/// One call the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    /// The HTTP method, or `"SEARCH"` for `POST /contacts/search`.
    pub method: String,
    /// The contact in the path; `"search"`, `"oauth"` or `"pipelines"` for the calls that have none.
    pub contact_id: String,
    pub followers: Vec<String>,
    /// The JSON body as sent, for followers calls and searches.
    pub body: Option<Value>,
    pub authorization: Option<String>,
    pub version: Option<String>,
    pub status: u16,
    pub at: Instant,
}

/// What the fake knows of one contact.
#[derive(Debug, Clone)]
struct Contact {
    location: String,
    followers: BTreeSet<String>,
    tags: Vec<String>,
    source: Option<String>,
    /// Milliseconds since the epoch; `added_ms` is the first part of the search cursor.
    added_ms: i64,
    updated_ms: i64,
}

impl Contact {
    fn new(location: &str, now_ms: i64) -> Self {
        Self {
            location: location.to_owned(),
            followers: BTreeSet::new(),
            tags: Vec::new(),
            source: None,
            added_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    /// The cursor a search answers for this contact: `[dateAdded in ms, id]`, the order results come in.
    fn cursor(&self, id: &str) -> Value {
        json!([self.added_ms, id])
    }

    /// The contact as the CRM's `ContactsSearchSchema` shows it; GET by id shows the same without followers.
    fn to_json(&self, id: &str) -> Value {
        json!({
            "id": id,
            "locationId": self.location,
            "tags": self.tags,
            "followers": self.followers,
            "source": self.source,
            "dateAdded": iso(self.added_ms),
            "dateUpdated": iso(self.updated_ms),
            "searchAfter": self.cursor(id),
        })
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[derive(Default)]
struct Inner {
    contacts: HashMap<String, Contact>,
    /// The contacts' clock, in milliseconds since the epoch (see [`EPOCH_MS`]).
    clock_ms: i64,
    calls: Vec<Call>,
    /// What the CRM's OpenAPI files (or its search docs) refuse in the requests received so far.
    violations: Vec<String>,
    /// Statuses to answer the next calls with, instead of serving them.
    scripted: VecDeque<u16>,
    /// Statuses to answer the next calls for one contact with.
    scripted_for: HashMap<String, VecDeque<u16>>,
    /// `Retry-After` sent with a scripted 429, in seconds.
    retry_after: u64,
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
    /// `GET /users/` answers, per location.
    users: HashMap<String, Value>,
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
                clock_ms: EPOCH_MS,
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
                .route("/contacts/search", web::post().to(search))
                .route("/contacts/{id}/followers", web::post().to(change))
                .route("/contacts/{id}/followers", web::delete().to(change))
                .route("/opportunities/{id}/followers", web::post().to(change_opportunity))
                .route("/opportunities/{id}/followers", web::delete().to(change_opportunity))
                .route("/contacts/{id}", web::get().to(get_contact))
                .route("/oauth/token", web::post().to(oauth_token))
                .route("/opportunities/pipelines", web::get().to(get_pipelines))
                .route("/users/", web::get().to(get_users))
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

    /// The location's users: `(id, name, email, deleted, assignedDataOnly)`, as `GET /users/` lists them.
    pub fn set_users(&self, location: &str, users: &[(&str, &str, &str, bool, bool)]) {
        let users: Vec<Value> = users
            .iter()
            .map(|(id, name, email, deleted, assigned)| {
                json!({ "id": id, "name": name, "email": email, "deleted": deleted,
                        "permissions": { "assignedDataOnly": assigned, "contactsEnabled": true } })
            })
            .collect();
        self.inner().users.insert(location.to_owned(), json!({ "users": users }));
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

    /// Does nothing: GET always answers without `followers` now, as the CRM's schema has none (`API.md` §3).
    /// Kept for the tests that still call it.
    pub fn omit_followers_in_get(&self) {}

    /// Sets `contact`'s followers; a contact the fake did not know joins [`DEFAULT_LOCATION`].
    pub fn set_followers(&self, contact: &str, users: &[&str]) {
        let mut inner = self.inner();
        let now = inner.tick();
        let record = inner.contact_mut(contact);
        record.followers = users.iter().map(|u| (*u).to_owned()).collect();
        record.updated_ms = now;
    }

    /// Puts `contact` in `location` with these tags and source, keeping its followers: what a search shows.
    pub fn set_contact(&self, contact: &str, location: &str, tags: &[&str], source: Option<&str>) {
        let mut inner = self.inner();
        let now = inner.tick();
        let record = inner.contact_mut(contact);
        record.location = location.to_owned();
        record.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        record.source = source.map(str::to_owned);
        record.updated_ms = now;
    }

    /// Sets `contact`'s tags, keeping the rest.
    pub fn set_tags(&self, contact: &str, tags: &[&str]) {
        let mut inner = self.inner();
        let now = inner.tick();
        let record = inner.contact_mut(contact);
        record.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        record.updated_ms = now;
    }

    /// The bodies of every `POST /contacts/search` received, answered or refused, in order.
    pub fn searches(&self) -> Vec<Value> {
        self.inner().calls.iter().filter(|c| c.method == "SEARCH").filter_map(|c| c.body.clone()).collect()
    }

    /// What the CRM would have refused in the requests received so far, one line each, naming the request
    /// and the field. A fake dropped with violations panics (unless the test is panicking already), so every
    /// test checks followd's requests against the CRM's OpenAPI files without asking.
    pub fn violations(&self) -> Vec<String> {
        self.inner().violations.clone()
    }

    /// Returns the violations and forgets them: for a test that sends a refused request on purpose.
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.inner().violations)
    }

    /// The fake's own rate limit: `None` turns it off.
    pub fn set_limit(&self, limit: Option<(u32, Duration)>) {
        self.inner().limit = limit;
    }

    pub fn set_latency(&self, latency: Duration) {
        self.inner().latency = latency;
    }

    pub fn followers_of(&self, contact: &str) -> BTreeSet<String> {
        self.inner().contacts.get(contact).map(|c| c.followers.clone()).unwrap_or_default()
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
        self.wait_until(deadline, |inner| {
            inner.contacts.get(contact).map(|c| c.followers.clone()).unwrap_or_default() == want
        })
        .await
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

impl Inner {
    /// Moves the contacts' clock by a second and tells the time.
    fn tick(&mut self) -> i64 {
        self.clock_ms += 1000;
        self.clock_ms
    }

    /// The contact, created in [`DEFAULT_LOCATION`] when the fake did not know it.
    fn contact_mut(&mut self, id: &str) -> &mut Contact {
        let created = !self.contacts.contains_key(id);
        let now = if created { self.tick() } else { self.clock_ms };
        self.contacts.entry(id.to_owned()).or_insert_with(|| Contact::new(DEFAULT_LOCATION, now))
    }
}

/// Fails the test that received requests the CRM would refuse. A panic in `drop` fails a test when the fake is
/// dropped on the test's own thread (at the end of the test body, where tests own it), which is where the
/// report is most useful; while the thread is already panicking it only prints, as a second panic would abort.
impl Drop for FakeUpstream {
    fn drop(&mut self) {
        let stop = self.handle.stop(false);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(stop);
        }
        let violations = std::mem::take(&mut self.inner().violations);
        if violations.is_empty() {
            return;
        }
        let mut report =
            format!("the fake CRM received {} request(s) the CRM's OpenAPI files refuse:", violations.len());
        for violation in &violations {
            let _ = write!(report, "\n  {violation}");
        }
        if std::thread::panicking() {
            eprintln!("{report}");
        } else {
            panic!("{report}");
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

/// The CRM's refusal with `messages`: 400's `message` is a string (`BadRequestDTO`), the others' a list of
/// strings with an `error` (`UnprocessableDTO`), `API.md` §4.
fn refusal(status: u16, messages: Vec<String>) -> HttpResponse {
    let code =
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::UNPROCESSABLE_ENTITY);
    let body = if status == 400 {
        json!({"statusCode": 400, "message": messages.join("; ")})
    } else {
        json!({"statusCode": status, "message": messages, "error": code.canonical_reason().unwrap_or_default()})
    };
    HttpResponse::build(code).json(body)
}

/// Checks the request against the CRM's OpenAPI files and keeps what they refuse as violations; `Some` is
/// the answer the CRM would give instead (400 when a header is wrong, else 422).
fn validate(state: &State, request: &HttpRequest, body: Option<&Value>) -> Option<HttpResponse> {
    let headers: Vec<(&str, &str)> =
        request.headers().iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))).collect();
    let path = request.uri().path_and_query().map_or_else(|| request.path(), |p| p.as_str());
    let violations = openapi::check(request.method().as_str(), path, &headers, body);
    let status = violations.iter().map(|v| v.status).find(|s| *s == 400).or(violations.first().map(|v| v.status))?;
    let messages: Vec<String> = violations.into_iter().map(|v| v.message).collect();
    state.inner.lock().unwrap_or_else(|e| e.into_inner()).violations.extend(messages.iter().cloned());
    Some(refusal(status, messages))
}

/// Checks what every call must carry and applies the rate limit; `Err` is the answer to send instead. A
/// scripted status wins over everything (tests script the next answers), then a wrong token (the CRM checks
/// it before the request), then what the OpenAPI files refuse; violations are kept in every case.
fn admit(
    state: &State,
    request: &HttpRequest,
    contact: &str,
    body: Option<&Value>,
) -> Result<(u32, u32, Duration), Box<HttpResponse>> {
    let refused = validate(state, request, body);
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
    if let Some(response) = refused {
        return Err(Box::new(response));
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

/// A call to `contact` as received, with no followers and no body; callers fill in what they have.
fn call(request: &HttpRequest, contact: &str, status: u16, at: Instant) -> Call {
    Call {
        method: request.method().to_string(),
        contact_id: contact.to_owned(),
        followers: Vec::new(),
        body: None,
        authorization: header(request, "authorization"),
        version: header(request, "version"),
        status,
        at,
    }
}

fn push(state: &State, call: Call) {
    state.inner.lock().unwrap_or_else(|e| e.into_inner()).calls.push(call);
    state.changed.notify_waiters();
}

fn record(state: &State, request: &HttpRequest, contact: &str, status: u16, at: Instant) {
    push(state, call(request, contact, status, at));
}

async fn change(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<State>,
) -> HttpResponse {
    change_followers(request, path.into_inner(), body, state).await
}

/// `POST`/`DELETE /opportunities/{id}/followers`: an opportunity's followers, kept (and listed by
/// [`FakeUpstream::followers_of`], [`FakeUpstream::calls_for`]) under `opportunity:<id>`. `DELETE` with
/// `isRemoveAllFollowers=true` removes every follower, whatever the body lists.
async fn change_opportunity(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<State>,
) -> HttpResponse {
    change_followers(request, format!("opportunity:{}", path.into_inner()), body, state).await
}

async fn change_followers(
    request: HttpRequest,
    contact: String,
    body: web::Bytes,
    state: web::Data<State>,
) -> HttpResponse {
    let at = Instant::now();
    let remove_all = request.query_string().split('&').any(|pair| pair == "isRemoveAllFollowers=true");
    let json = serde_json::from_slice::<Value>(&body).ok();
    let parsed: Option<Vec<String>> =
        json.as_ref().and_then(|v| v.get("followers").cloned()).and_then(|f| serde_json::from_value(f).ok());
    let recorded = |status: u16| Call {
        followers: parsed.clone().unwrap_or_default(),
        body: json.clone(),
        ..call(&request, &contact, status, at)
    };
    let (max, remaining, window) = match admit(&state, &request, &contact, json.as_ref()) {
        Ok(limits) => limits,
        Err(response) => {
            push(&state, recorded(response.status().as_u16()));
            return *response;
        }
    };
    // The OpenAPI check refuses a body without a list of strings; this only guards the unwrap.
    let Some(users) = parsed.clone() else {
        push(&state, recorded(422));
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
        let now = inner.tick();
        let record = inner.contact_mut(&contact);
        // Only the users this call changed: `followersAdded`/`followersRemoved` are deltas (`API.md` §2).
        let changed: Vec<String> = if add {
            users.iter().filter(|u| record.followers.insert((*u).clone())).cloned().collect()
        } else if remove_all {
            std::mem::take(&mut record.followers).into_iter().collect()
        } else {
            users.iter().filter(|u| record.followers.remove(*u)).cloned().collect()
        };
        if !changed.is_empty() {
            record.updated_ms = now;
        }
        (record.followers.iter().cloned().collect::<Vec<_>>(), changed)
    };
    let status = if add { 201 } else { 200 };
    push(&state, recorded(status));
    let mut response = if add { HttpResponse::Created() } else { HttpResponse::Ok() };
    rate_headers(&mut response, max, remaining, window);
    let delta = if add { "followersAdded" } else { "followersRemoved" };
    response.json(json!({ "followers": after, delta: changed }))
}

/// `GET /contacts/{id}`: the contact without `followers`, as the CRM's `GetContectByIdSchema` has none
/// (`API.md` §3). A contact the fake never heard of is answered as an untagged one in [`DEFAULT_LOCATION`].
async fn get_contact(request: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> HttpResponse {
    let contact = path.into_inner();
    let at = Instant::now();
    let (max, remaining, window) = match admit(&state, &request, &contact, None) {
        Ok(limits) => limits,
        Err(response) => {
            record(&state, &request, &contact, response.status().as_u16(), at);
            return *response;
        }
    };
    let mut shown = {
        let inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        let known = inner.contacts.get(&contact).cloned();
        known.unwrap_or_else(|| Contact::new(DEFAULT_LOCATION, inner.clock_ms)).to_json(&contact)
    };
    if let Some(fields) = shown.as_object_mut() {
        fields.remove("followers");
        fields.remove("searchAfter");
    }
    record(&state, &request, &contact, 200, at);
    let mut response = HttpResponse::Ok();
    rate_headers(&mut response, max, remaining, window);
    response.json(json!({ "contact": shown }))
}

/// `POST /contacts/search`: the contacts of the body's `locationId` that match every filter, in
/// (`dateAdded`, id) order, one page of `pageLimit` from `searchAfter` (or `page`). Recorded as a call with
/// method `"SEARCH"` and contact [`SEARCH`], with its body.
async fn search(request: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let at = Instant::now();
    let json = serde_json::from_slice::<Value>(&body).ok();
    let recorded =
        |status: u16| Call { method: "SEARCH".to_owned(), body: json.clone(), ..call(&request, SEARCH, status, at) };
    let (max, remaining, window) = match admit(&state, &request, SEARCH, json.as_ref()) {
        Ok(limits) => limits,
        Err(response) => {
            push(&state, recorded(response.status().as_u16()));
            return *response;
        }
    };
    let latency = {
        let mut inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner.in_flight.entry(SEARCH.to_owned()).or_default() += 1;
        inner.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let answer = {
        let mut inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = inner.in_flight.get_mut(SEARCH) {
            *count -= 1;
        }
        let answer = match &json {
            Some(body) => run_search(&inner, body),
            None => Err("the body is not JSON".to_owned()),
        };
        if let Err(message) = &answer {
            inner.violations.push(format!("POST /contacts/search: {message}"));
        }
        answer
    };
    match answer {
        Ok(page) => {
            push(&state, recorded(200));
            let mut response = HttpResponse::Ok();
            rate_headers(&mut response, max, remaining, window);
            response.json(page)
        }
        Err(message) => {
            push(&state, recorded(422));
            refusal(422, vec![format!("POST /contacts/search: {message}")])
        }
    }
}

/// One page of a search whose body the OpenAPI check accepted. `Err` is what the CRM's search docs refuse
/// (`pageLimit` past 500, `page` with `searchAfter`, a cursor it never gave) or what this fake does not
/// model (a field or operator it cannot evaluate): both are violations, so a test cannot pass on a search
/// the fake answered differently from the CRM.
fn run_search(inner: &Inner, body: &Value) -> Result<Value, String> {
    let location = body.get("locationId").and_then(Value::as_str).unwrap_or_default();
    let limit = body.get("pageLimit").and_then(Value::as_u64).unwrap_or(DEFAULT_PAGE_LIMIT);
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(format!("pageLimit {limit}: the CRM serves 1 to {MAX_PAGE_LIMIT} contacts a page"));
    }
    let cursor = body.get("searchAfter");
    if cursor.is_some() && body.get("page").is_some() {
        return Err("page with searchAfter: the CRM's search docs say to send no page with a cursor".to_owned());
    }
    let filters: &[Value] = body.get("filters").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    // Evaluated once on a blank contact so that an unsupported filter is reported even in an empty location.
    all_match(filters, "", &Contact::new(location, 0))?;
    let mut found = Vec::new();
    for (id, contact) in inner.contacts.iter().filter(|(_, c)| c.location == location) {
        if all_match(filters, id, contact)? {
            found.push((id.as_str(), contact));
        }
    }
    found.sort_by_key(|(id, contact)| (contact.added_ms, *id));
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let start = match cursor {
        Some(cursor) => {
            let after = parse_cursor(cursor)?;
            found.partition_point(|(id, contact)| (contact.added_ms, *id) <= after)
        }
        None => {
            let page = body.get("page").and_then(Value::as_u64).unwrap_or(1).max(1);
            usize::try_from(page - 1).unwrap_or(usize::MAX).saturating_mul(limit)
        }
    };
    let page: Vec<&(&str, &Contact)> = found.iter().skip(start).take(limit).collect();
    let contacts: Vec<Value> = page.iter().map(|(id, contact)| contact.to_json(id)).collect();
    let mut answer = json!({ "contacts": contacts, "total": found.len() });
    if let Some((id, contact)) = page.last() {
        answer["searchAfter"] = contact.cursor(id);
    }
    Ok(answer)
}

/// `[dateAdded ms, id]`, as [`Contact::cursor`] writes it.
fn parse_cursor(cursor: &Value) -> Result<(i64, &str), String> {
    match cursor.as_array().map(Vec::as_slice) {
        Some([ms, id]) => match (ms.as_i64(), id.as_str()) {
            (Some(ms), Some(id)) => Ok((ms, id)),
            _ => Err(format!("searchAfter {cursor}: not a cursor the CRM answered ([dateAdded ms, id])")),
        },
        _ => Err(format!("searchAfter {cursor}: not a cursor the CRM answered ([dateAdded ms, id])")),
    }
}

/// Whether the contact matches every filter (the top-level list is an AND). Every filter is evaluated, so an
/// unsupported one is reported whatever the others say.
fn all_match(filters: &[Value], id: &str, contact: &Contact) -> Result<bool, String> {
    let results = filters.iter().map(|f| matches(f, id, contact)).collect::<Result<Vec<bool>, String>>()?;
    Ok(!results.contains(&false))
}

fn matches(filter: &Value, id: &str, contact: &Contact) -> Result<bool, String> {
    if let Some(group) = filter.get("group").and_then(Value::as_str) {
        let inner = filter.get("filters").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let results = inner.iter().map(|f| matches(f, id, contact)).collect::<Result<Vec<bool>, String>>()?;
        return Ok(if group == "OR" { results.contains(&true) } else { !results.contains(&false) });
    }
    let field = filter.get("field").and_then(Value::as_str).unwrap_or_default();
    let operator = filter.get("operator").and_then(Value::as_str).unwrap_or_default();
    // A list field "contains" a value it holds; a single value contains it as text.
    let (values, list): (Vec<&str>, bool) = match field {
        "id" => (vec![id], false),
        "locationId" => (vec![contact.location.as_str()], false),
        "source" => (contact.source.iter().map(String::as_str).collect(), false),
        "tags" => (contact.tags.iter().map(String::as_str).collect(), true),
        "followers" => (contact.followers.iter().map(String::as_str).collect(), true),
        other => {
            return Err(format!(
                "filter field `{other}`: the fake CRM does not model it (it knows id, locationId, source, tags, followers)"
            ));
        }
    };
    // Tags compare without case: the CRM keeps them lower-cased whatever case they were written in.
    let same = |a: &str, b: &str| if field == "tags" { a.eq_ignore_ascii_case(b) } else { a == b };
    let wanted = || {
        filter
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("filter `{field} {operator}`: the fake CRM models string values only"))
    };
    match operator {
        "exists" => Ok(!values.is_empty()),
        "not_exists" => Ok(values.is_empty()),
        "eq" | "not_eq" => {
            let wanted = wanted()?;
            Ok(values.iter().any(|v| same(v, wanted)) == (operator == "eq"))
        }
        "contains" | "not_contains" => {
            let wanted = wanted()?;
            let hit = if list {
                values.iter().any(|v| same(v, wanted))
            } else {
                values.iter().any(|v| v.to_lowercase().contains(&wanted.to_lowercase()))
            };
            Ok(hit == (operator == "contains"))
        }
        other => Err(format!("filter operator `{other}` on `{field}`: the fake CRM does not model it")),
    }
}

/// `POST /oauth/token` (form-encoded, `grant_type=refresh_token`): spends the refresh token, issues a new pair.
async fn oauth_token(
    request: HttpRequest,
    form: web::Form<HashMap<String, String>>,
    state: web::Data<State>,
) -> HttpResponse {
    let at = Instant::now();
    // A form's values are all strings, which is all `GetAccessCodebodyDto` asks of them.
    let fields: serde_json::Map<String, Value> =
        form.iter().map(|(name, value)| (name.clone(), Value::String(value.clone()))).collect();
    if let Some(response) = validate(&state, &request, Some(&Value::Object(fields))) {
        record(&state, &request, "oauth", response.status().as_u16(), at);
        return response;
    }
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
    record(&state, &request, "oauth", status, at);
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
    per_location(&request, &query, &state, "pipelines", |inner| &inner.pipelines)
}

/// `GET /users/?locationId=...`.
async fn get_users(
    request: HttpRequest,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<State>,
) -> HttpResponse {
    per_location(&request, &query, &state, "users", |inner| &inner.users)
}

/// A read that answers what was set for the query's `locationId` (`{"<what>": []}` when nothing was),
/// admitted and recorded under `what` like every call.
fn per_location(
    request: &HttpRequest,
    query: &HashMap<String, String>,
    state: &State,
    what: &str,
    answers: impl Fn(&Inner) -> &HashMap<String, Value>,
) -> HttpResponse {
    let at = Instant::now();
    let location = query.get("locationId").cloned().unwrap_or_default();
    let (max, remaining, window) = match admit(state, request, what, None) {
        Ok(limits) => limits,
        Err(response) => {
            record(state, request, what, response.status().as_u16(), at);
            return *response;
        }
    };
    let body = {
        let inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        answers(&inner).get(&location).cloned().unwrap_or_else(|| json!({ what: [] }))
    };
    record(state, request, what, 200, at);
    let mut response = HttpResponse::Ok();
    rate_headers(&mut response, max, remaining, window);
    response.json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = "2021-07-28";

    /// Sends `body` as JSON with the token and `version`, answers the status and the JSON body.
    async fn send(fake: &FakeUpstream, method: &str, path: &str, version: Option<&str>, body: Value) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = reqwest::Client::new()
            .request(method.clone(), format!("{}{path}", fake.url))
            .header("Authorization", format!("Bearer {TOKEN}"));
        if let Some(version) = version {
            request = request.header("Version", version);
        }
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the fake answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn search(fake: &FakeUpstream, body: Value) -> Value {
        let (status, answer) = send(fake, "POST", "/contacts/search", Some(V2), body).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    fn ids(answer: &Value) -> Vec<&str> {
        answer["contacts"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_str()).collect()
    }

    #[tokio::test]
    async fn a_search_pages_through_one_location_in_creation_order_with_cursors() {
        let fake = FakeUpstream::start().await;
        for id in ["c-5", "c-1", "c-4", "c-2", "c-3"] {
            fake.set_followers(id, &["usr_a"]);
        }
        fake.set_contact("elsewhere", "loc-2", &[], None);

        let first = search(&fake, json!({"locationId": "loc-1", "pageLimit": 2})).await;
        assert_eq!(ids(&first), ["c-5", "c-1"]);
        assert_eq!(first["total"], 5);
        assert_eq!(first["searchAfter"], first["contacts"][1]["searchAfter"]);
        let second =
            search(&fake, json!({"locationId": "loc-1", "pageLimit": 2, "searchAfter": first["searchAfter"]})).await;
        assert_eq!(ids(&second), ["c-4", "c-2"]);
        let cursor = second["contacts"][1]["searchAfter"].clone();
        let last = search(&fake, json!({"locationId": "loc-1", "pageLimit": 2, "searchAfter": cursor})).await;
        assert_eq!(ids(&last), ["c-3"], "a page shorter than pageLimit is the last");
        assert_eq!(last["total"], 5, "total counts every match, not the page");
        assert_eq!(last["contacts"][0]["followers"], json!(["usr_a"]));
        assert_eq!(fake.searches().len(), 3);
        assert!(fake.calls_for(SEARCH).iter().all(|c| c.method == "SEARCH" && c.body.is_some()));
    }

    #[tokio::test]
    async fn a_search_filters_by_id_and_by_tag_without_case_and_joins_filters_with_and() {
        let fake = FakeUpstream::start().await;
        fake.set_contact("c-1", "loc-1", &["vip", "lead"], Some("form"));
        fake.set_contact("c-2", "loc-1", &["VIP"], None);
        fake.set_contact("c-3", "loc-1", &["lead"], None);
        fake.set_followers("c-1", &["usr_a", "usr_b"]);

        let one = search(
            &fake,
            json!({"locationId": "loc-1", "pageLimit": 1, "filters": [{"field": "id", "operator": "eq", "value": "c-1"}]}),
        )
        .await;
        assert_eq!(ids(&one), ["c-1"]);
        assert_eq!(one["contacts"][0]["followers"], json!(["usr_a", "usr_b"]));
        assert_eq!(one["contacts"][0]["tags"], json!(["vip", "lead"]));
        assert_eq!(one["contacts"][0]["source"], "form");
        let vip = json!({"field": "tags", "operator": "contains", "value": "Vip"});
        let tagged = search(&fake, json!({"locationId": "loc-1", "pageLimit": 10, "filters": [vip]})).await;
        assert_eq!(ids(&tagged), ["c-1", "c-2"]);
        let lead = json!({"field": "tags", "operator": "eq", "value": "lead"});
        let both = search(&fake, json!({"locationId": "loc-1", "pageLimit": 10, "filters": [vip, lead]})).await;
        assert_eq!(ids(&both), ["c-1"]);
        let elsewhere = search(&fake, json!({"locationId": "loc-2", "pageLimit": 10, "filters": [vip]})).await;
        assert_eq!(elsewhere["total"], 0);
    }

    #[tokio::test]
    async fn a_search_the_fake_cannot_answer_like_the_crm_is_refused_and_kept() {
        let fake = FakeUpstream::start().await;
        let range = json!({"field": "dateAdded", "operator": "range", "value": {"gte": "2026-01-01"}});
        let body = json!({"locationId": "loc-1", "pageLimit": 1, "filters": [range]});
        let (status, answer) = send(&fake, "POST", "/contacts/search", Some(V2), body).await;
        assert_eq!(status, 422, "{answer}");
        let (status, _) =
            send(&fake, "POST", "/contacts/search", Some(V2), json!({"locationId": "loc-1", "pageLimit": 501})).await;
        assert_eq!(status, 422);
        let violations = fake.take_violations();
        assert!(violations[0].contains("`dateAdded`"), "{violations:?}");
        assert!(violations[1].contains("pageLimit 501"), "{violations:?}");
    }

    #[tokio::test]
    async fn get_contact_shows_location_tags_and_source_but_no_followers() {
        let fake = FakeUpstream::start().await;
        fake.set_contact("c-1", "loc-1", &["vip"], Some("form"));
        fake.set_followers("c-1", &["usr_a"]);
        let (status, answer) = send(&fake, "GET", "/contacts/c-1", Some(V2), Value::Null).await;
        assert_eq!(status, 200);
        let contact = &answer["contact"];
        assert_eq!((contact["locationId"].as_str(), contact["source"].as_str()), (Some("loc-1"), Some("form")));
        assert_eq!(contact["tags"], json!(["vip"]));
        assert!(contact.get("followers").is_none(), "the CRM's GET schema has no followers: {answer}");
    }

    #[tokio::test]
    async fn followers_added_and_removed_list_only_the_users_that_changed() {
        let fake = FakeUpstream::start().await;
        fake.set_followers("c-1", &["usr_a"]);
        let (status, added) =
            send(&fake, "POST", "/contacts/c-1/followers", Some(V2), json!({"followers": ["usr_a", "usr_b"]})).await;
        assert_eq!(status, 201);
        assert_eq!(added, json!({"followers": ["usr_a", "usr_b"], "followersAdded": ["usr_b"]}));
        let (status, removed) =
            send(&fake, "DELETE", "/contacts/c-1/followers", Some(V2), json!({"followers": ["usr_b", "usr_c"]})).await;
        assert_eq!(status, 200);
        assert_eq!(removed, json!({"followers": ["usr_a"], "followersRemoved": ["usr_b"]}));
        assert_eq!(fake.calls_for("c-1")[1].body, Some(json!({"followers": ["usr_b", "usr_c"]})));
    }

    #[tokio::test]
    async fn a_wrong_version_is_answered_400_and_a_wrong_body_422_both_kept_as_violations() {
        let fake = FakeUpstream::start().await;
        let (status, answer) = send(&fake, "GET", "/contacts/c-1", Some("v3"), Value::Null).await;
        assert_eq!(status, 400, "{answer}");
        let (status, answer) =
            send(&fake, "POST", "/contacts/c-1/followers", Some(V2), json!({"followers": "usr_a"})).await;
        assert_eq!(status, 422);
        assert!(answer["message"][0].as_str().is_some_and(|m| m.contains("body.followers")), "{answer}");
        assert_eq!(fake.take_violations().len(), 2);
        assert!(fake.followers_of("c-1").is_empty());
    }

    /// The fake's own check that a violation fails the test: the panic comes from `Drop` at the end of the
    /// async body, on the test's thread.
    #[tokio::test]
    #[should_panic(expected = "request(s) the CRM's OpenAPI files refuse")]
    async fn a_fake_dropped_with_violations_fails_the_test() {
        let fake = FakeUpstream::start().await;
        let (status, _) = send(&fake, "POST", "/contacts/c-1/followers", None, json!({"followers": ["usr_a"]})).await;
        assert_eq!(status, 400);
    }
}
