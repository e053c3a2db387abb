//! The live CRM client: `reqwest`, bearer tokens per sub-account, the pinned `Version` header. It changes
//! followers (`POST`/`DELETE /contacts/{id}/followers`) and reads contacts through `POST /contacts/search`, the
//! one place the CRM lists a contact's followers (`shared/ghl/API.md` §13; `GET /contacts/{id}` has none).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{API_VERSION, OAuth, TokenStore, UpstreamError};
use crate::config::{ConfigError, UpstreamConfig};
use crate::event::{ContactKey, LocationId, UserId};

/// Longest error body kept for logs and dead letters.
const MAX_ERROR_MESSAGE: usize = 512;

/// Calls the CRM. Tokens live only here, as secrets, and go only into the `Authorization` header.
pub struct LiveClient {
    http: reqwest::Client,
    base_url: Url,
    /// Swapped whole when the configuration is reloaded (SIGHUP), so a fixed token goes out without a restart.
    credentials: ArcSwap<Credentials>,
    /// Marketplace-app locations whose access tokens are refreshed through OAuth.
    oauth: Option<OAuth>,
    /// Locations whose last answer said the CRM's rate budget is spent (`X-RateLimit-Remaining: 0`), with how
    /// long its window lasts: the worker pauses them before the CRM has to answer 429.
    exhausted: std::sync::Mutex<HashMap<LocationId, Duration>>,
}

impl std::fmt::Debug for LiveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveClient").field("base_url", &self.base_url.as_str()).finish_non_exhaustive()
    }
}

/// The static tokens: `upstream.token` and `upstream.tokens.<location>`, resolved.
struct Credentials {
    default_token: Option<SecretString>,
    tokens: HashMap<LocationId, SecretString>,
}

impl Credentials {
    /// Resolves the tokens `config` names (`env:` and `file:` references are read now).
    fn resolve(config: &UpstreamConfig, base_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let default_token = config.token.as_ref().map(|t| t.resolve_named("upstream.token", base_dir)).transpose()?;
        let tokens = config
            .tokens
            .iter()
            .map(|(location, token)| {
                let secret = token.resolve_named(&format!("upstream.tokens.{location}"), base_dir)?;
                Ok((location_id(location, "upstream.tokens")?, secret))
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self { default_token, tokens })
    }

    /// Whether `other` holds exactly the same tokens (compared here only; never logged).
    fn same_as(&self, other: &Self) -> bool {
        let same = |a: &SecretString, b: &SecretString| a.expose_secret() == b.expose_secret();
        let defaults = match (&self.default_token, &other.default_token) {
            (Some(a), Some(b)) => same(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        defaults
            && self.tokens.len() == other.tokens.len()
            && self.tokens.iter().all(|(location, a)| other.tokens.get(location).is_some_and(|b| same(a, b)))
    }
}

/// A location id written as a configuration key (`upstream.tokens.<location>`).
fn location_id(location: &str, table: &str) -> Result<LocationId, ConfigError> {
    LocationId::parse(location).map_err(|e| ConfigError::Invalid(format!("{table}: location id `{location}` {e}")))
}

/// What a followers call answers: the followers after the call and the ones it changed (`followersAdded` or
/// `followersRemoved`), where the CRM says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowersAnswer {
    #[serde(default)]
    pub followers: Option<Vec<UserId>>,
    #[serde(default, alias = "followersAdded", alias = "followersRemoved")]
    pub changed: Option<Vec<UserId>>,
}

/// A user of a location as `GET /users/` lists them (`shared/ghl/API.md` §13; the fields followd reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmUser {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub permissions: UserPermissions,
}

/// The one permission followd cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPermissions {
    /// The user sees only the contacts they own or follow: following is what gives them a contact.
    #[serde(default)]
    pub assigned_data_only: bool,
}

#[derive(Deserialize)]
struct UsersAnswer {
    #[serde(default)]
    users: Vec<CrmUser>,
}

/// A contact as `POST /contacts/search` lists it (the fields followd reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmContact {
    pub id: crate::event::ContactId,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub followers: Vec<UserId>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub date_added: Option<String>,
    #[serde(default)]
    pub date_updated: Option<String>,
    /// This contact's paging cursor.
    #[serde(default)]
    pub search_after: Option<serde_json::Value>,
}

/// One page of a location's contacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactPage {
    pub contacts: Vec<CrmContact>,
    /// Every contact the search matches, where the CRM says (`total`, or `count` in its schema).
    pub total: Option<u64>,
    /// The cursor of the next page; `None` after the last.
    pub next: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchAnswer {
    #[serde(default)]
    contacts: Vec<CrmContact>,
    #[serde(default, alias = "count")]
    total: Option<u64>,
    #[serde(default)]
    search_after: Option<serde_json::Value>,
}

/// Most contacts one search page may ask for (`shared/../DESIGN.md`, "Reading the CRM").
pub const MAX_PAGE: u32 = 500;

/// `GET /opportunities/pipelines` (`shared/ghl/API.md` §7: ids and names come only from here).
#[derive(Deserialize)]
struct PipelinesAnswer {
    #[serde(default)]
    pipelines: Vec<Pipeline>,
}

/// A pipeline and its stages, ids and names.
#[derive(Debug, Clone, Deserialize)]
pub struct Pipeline {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Stage {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// The CRM's error envelope: `message` is a string or, for 422, a list (`shared/ghl/API.md` §4).
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<String>,
}

impl LiveClient {
    pub fn new(
        config: &UpstreamConfig,
        base_dir: &std::path::Path,
        store: std::sync::Arc<dyn TokenStore>,
    ) -> Result<Self, ConfigError> {
        let credentials = ArcSwap::from_pointee(Credentials::resolve(config, base_dir)?);
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("followd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        let oauth = match &config.oauth {
            Some(oauth) => {
                let token_url = match &oauth.token_url {
                    Some(url) => url.clone(),
                    None => config
                        .base_url
                        .join("oauth/token")
                        .map_err(|e| ConfigError::Invalid(format!("upstream.oauth.token_url: {e}")))?,
                };
                let seeds = oauth
                    .refresh_tokens
                    .iter()
                    .map(|(location, token)| {
                        let key = format!("upstream.oauth.refresh_tokens.{location}");
                        Ok((
                            location_id(location, "upstream.oauth.refresh_tokens")?,
                            token.resolve_named(&key, base_dir)?,
                        ))
                    })
                    .collect::<Result<_, ConfigError>>()?;
                Some(OAuth {
                    http: http.clone(),
                    token_url,
                    client_id: oauth.client_id.clone(),
                    client_secret: oauth.client_secret.resolve_named("upstream.oauth.client_secret", base_dir)?,
                    seeds,
                    store,
                    locks: Default::default(),
                })
            }
            None => None,
        };
        Ok(Self { http, base_url: config.base_url.clone(), credentials, oauth, exhausted: Default::default() })
    }

    /// Replaces the static tokens with those `config` names now (re-reading `env:`/`file:` references).
    /// Returns whether any changed. On an error the tokens in use stay.
    pub fn reload_credentials(&self, config: &UpstreamConfig, base_dir: &std::path::Path) -> Result<bool, ConfigError> {
        let fresh = Credentials::resolve(config, base_dir)?;
        let changed = !self.credentials.load().same_as(&fresh);
        if changed {
            self.credentials.store(std::sync::Arc::new(fresh));
        }
        Ok(changed)
    }

    /// The bearer token for a location: its own static token, else its OAuth token, else the default one.
    /// `rejected`: an OAuth token the CRM just refused with 401.
    async fn token(
        &self,
        location: &LocationId,
        rejected: Option<&str>,
    ) -> Result<(SecretString, bool), UpstreamError> {
        // An owned snapshot, not a guard: the OAuth branch awaits.
        let credentials = self.credentials.load_full();
        if let Some(token) = credentials.tokens.get(location) {
            return Ok((token.clone(), false));
        }
        if let Some(oauth) = self.oauth.as_ref().filter(|o| o.covers(location)) {
            return Ok((oauth.access_token(location, rejected).await?, true));
        }
        credentials
            .default_token
            .clone()
            .map(|t| (t, false))
            .ok_or_else(|| UpstreamError::NoToken(location.to_string()))
    }

    /// `/contacts/{id}/followers` under the base URL, or `/opportunities/{id}/followers` for an opportunity's
    /// key.
    fn followers_url(&self, contact: &ContactKey) -> Url {
        let mut url = self.base_url.clone();
        let (collection, id) = match contact.contact_id.as_opportunity() {
            Some(opportunity) => ("opportunities", opportunity),
            None => ("contacts", contact.contact_id.as_str()),
        };
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(collection).push(id).push("followers");
        }
        url
    }

    /// Sends a request with the location's token. An OAuth token the CRM refuses (401) is refreshed once and
    /// the request sent again, as GoHighLevel's own SDK does.
    async fn send_authorized(
        &self,
        method: Method,
        url: Url,
        location: &LocationId,
        body: Option<&serde_json::Value>,
        label: &'static str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut rejected: Option<SecretString> = None;
        loop {
            let (token, refreshable) = self.token(location, rejected.as_ref().map(|t| t.expose_secret())).await?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret())
                .header("Version", API_VERSION)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = send(request, label).await?;
            if response.status() == StatusCode::UNAUTHORIZED && refreshable && rejected.is_none() {
                rejected = Some(token);
                continue;
            }
            self.note_budget(location, response.headers());
            return Ok(response);
        }
    }

    /// POST (add) or DELETE (remove) followers. DELETE carries its JSON body too (`shared/ghl/API.md` §2).
    /// An answer that cannot be read is still a success (any 2xx is): it then says nothing.
    pub async fn change_followers(
        &self,
        method: Method,
        contact: &ContactKey,
        users: &[UserId],
    ) -> Result<FollowersAnswer, UpstreamError> {
        let label = if method == Method::DELETE { "DELETE" } else { "POST" };
        let body = serde_json::json!({ "followers": users });
        let url = self.followers_url(contact);
        let response = self.send_authorized(method, url, &contact.location_id, Some(&body), label).await?;
        Ok(check(response).await?.json().await.unwrap_or_default())
    }

    /// `DELETE /opportunities/{id}/followers?isRemoveAllFollowers=true`: every follower of an opportunity, in
    /// one call and without reading them first (the CRM's contacts search does not list opportunities).
    pub async fn remove_all_followers(&self, opportunity: &ContactKey) -> Result<FollowersAnswer, UpstreamError> {
        let mut url = self.followers_url(opportunity);
        url.query_pairs_mut().append_pair("isRemoveAllFollowers", "true");
        let body = serde_json::json!({ "followers": [] });
        let response =
            self.send_authorized(Method::DELETE, url, &opportunity.location_id, Some(&body), "DELETE").await?;
        Ok(check(response).await?.json().await.unwrap_or_default())
    }

    /// `POST /contacts/search` with `body`, for `location`.
    async fn search(&self, location: &LocationId, body: &serde_json::Value) -> Result<SearchAnswer, UpstreamError> {
        let mut url = self.base_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("contacts").push("search");
        }
        let response = self.send_authorized(Method::POST, url, location, Some(body), "SEARCH").await?;
        check(response).await?.json().await.map_err(UpstreamError::Decode)
    }

    /// One contact by id, as the search lists it; `None` when the CRM does not know it.
    pub async fn contact(&self, contact: &ContactKey) -> Result<Option<CrmContact>, UpstreamError> {
        let body = serde_json::json!({
            "locationId": contact.location_id,
            "pageLimit": 1,
            "filters": [{ "field": "id", "operator": "eq", "value": contact.contact_id }],
        });
        let answer = self.search(&contact.location_id, &body).await?;
        Ok(answer.contacts.into_iter().find(|c| c.id == contact.contact_id))
    }

    /// A page of the location's contacts, `page_limit` (at most [`MAX_PAGE`]) at a time, after `cursor`.
    pub async fn contacts_page(
        &self,
        location: &LocationId,
        page_limit: u32,
        cursor: Option<&serde_json::Value>,
    ) -> Result<ContactPage, UpstreamError> {
        let page_limit = page_limit.clamp(1, MAX_PAGE);
        let mut body = serde_json::json!({ "locationId": location, "pageLimit": page_limit });
        if let Some(cursor) = cursor {
            body["searchAfter"] = cursor.clone();
        }
        let answer = self.search(location, &body).await?;
        let last_page = answer.contacts.len() < page_limit as usize;
        let next = if last_page {
            None
        } else {
            answer.search_after.or_else(|| answer.contacts.last().and_then(|c| c.search_after.clone()))
        };
        Ok(ContactPage { contacts: answer.contacts, total: answer.total, next })
    }

    /// `GET /users/?locationId=...`: the location's users (scope `users.readonly`).
    pub async fn users(&self, location: &LocationId) -> Result<Vec<CrmUser>, UpstreamError> {
        let answer: UsersAnswer = self.get_for(location, &["users", ""]).await?;
        Ok(answer.users)
    }

    /// `GET <segments>?locationId=<location>`, its answer read as `T`.
    async fn get_for<T: serde::de::DeserializeOwned>(
        &self,
        location: &LocationId,
        segments: &[&str],
    ) -> Result<T, UpstreamError> {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url.query_pairs_mut().append_pair("locationId", location.as_str());
        let response = self.send_authorized(Method::GET, url, location, None, "GET").await?;
        check(response).await?.json().await.map_err(UpstreamError::Decode)
    }

    /// `GET /opportunities/pipelines?locationId=...`: the location's pipelines with their stages.
    pub async fn pipelines(&self, location: &LocationId) -> Result<Vec<Pipeline>, UpstreamError> {
        let answer: PipelinesAnswer = self.get_for(location, &["opportunities", "pipelines"]).await?;
        Ok(answer.pipelines)
    }
}

impl LiveClient {
    /// Remembers a location whose budget the CRM says is spent (`shared/ghl/API.md` §6 headers), with a pause
    /// of one of the CRM's own slots (window ÷ max): the headers do not say when the window resets, and
    /// followd's own pacing empties the budget at the end of every window by design, so a longer pause would
    /// waste budget; a real 429 still pauses until `Retry-After` or the whole window.
    fn note_budget(&self, location: &LocationId, headers: &reqwest::header::HeaderMap) {
        if header_number(headers, "x-ratelimit-remaining") == Some(0) {
            let window = header_number(headers, "x-ratelimit-interval-milliseconds").unwrap_or(10_000);
            let slot = window / header_number(headers, "x-ratelimit-max").unwrap_or(1).max(1);
            let mut exhausted = self.exhausted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            exhausted.insert(location.clone(), Duration::from_millis(slot));
        }
    }

    /// Whether the last answer for `location` said its budget is spent, and for how long; clears the note.
    pub fn take_exhausted(&self, location: &LocationId) -> Option<Duration> {
        self.exhausted.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(location)
    }
}

fn header_number(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Sends and records the call's latency and outcome.
async fn send(request: reqwest::RequestBuilder, method: &'static str) -> Result<reqwest::Response, UpstreamError> {
    let started = Instant::now();
    let result = request.send().await;
    let status = match &result {
        Ok(response) => response.status().as_str().to_owned(),
        Err(e) if e.is_timeout() => "timeout".to_owned(),
        Err(_) => "error".to_owned(),
    };
    metrics::histogram!("followd_upstream_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("followd_upstream_requests_total", "method" => method, "status" => status).increment(1);
    result.map_err(UpstreamError::Transport)
}

/// Turns a non-2xx answer into [`UpstreamError::Status`] with the CRM's message and any `Retry-After`.
async fn check(response: reqwest::Response) -> Result<reqwest::Response, UpstreamError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let text = response.text().await.unwrap_or_default();
    Err(UpstreamError::Status { status: status.as_u16(), message: error_message(status, &text), retry_after })
}

/// When to come back: `Retry-After` (seconds) when sent, else the rate-limit window when it says the budget
/// is spent (GoHighLevel's 429 may carry only those headers: `shared/ghl/API.md` §6).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(seconds) = header_number(headers, "retry-after") {
        return Some(Duration::from_secs(seconds));
    }
    (header_number(headers, "x-ratelimit-remaining") == Some(0))
        .then(|| header_number(headers, "x-ratelimit-interval-milliseconds").map(Duration::from_millis))
        .flatten()
}

/// Reads `bytes` as every answer of the CRM followd parses (followers calls, search, pipelines, error bodies),
/// for the fuzz targets: none may panic, whatever the bytes.
pub(crate) fn read_answers(bytes: &[u8]) {
    let _ = serde_json::from_slice::<FollowersAnswer>(bytes);
    let _ = serde_json::from_slice::<SearchAnswer>(bytes);
    let _ = serde_json::from_slice::<PipelinesAnswer>(bytes);
    let _ = serde_json::from_slice::<UsersAnswer>(bytes);
    let text = String::from_utf8_lossy(bytes);
    for status in [StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY, StatusCode::BAD_GATEWAY] {
        let _ = error_message(status, &text);
    }
}

/// The CRM's message, as its own SDK reads it: `message` (string or list), else `error`, else the raw text.
fn error_message(status: StatusCode, text: &str) -> String {
    let parsed = serde_json::from_str::<ErrorBody>(text).ok();
    let message = match parsed.as_ref().and_then(|b| b.message.as_ref()) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Array(items)) => {
            Some(items.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join("; "))
        }
        _ => parsed.and_then(|b| b.error),
    };
    let mut message = message.unwrap_or_else(|| {
        if text.trim().is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text.to_owned() }
    });
    if message.len() > MAX_ERROR_MESSAGE {
        let cut = (0..=MAX_ERROR_MESSAGE).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
        message.truncate(cut);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_read_strings_lists_and_fallbacks() {
        let m =
            error_message(StatusCode::UNPROCESSABLE_ENTITY, r#"{"statusCode":422,"message":["a","b"],"error":"x"}"#);
        assert_eq!(m, "a; b");
        assert_eq!(
            error_message(StatusCode::UNAUTHORIZED, r#"{"statusCode":401,"error":"Unauthorized"}"#),
            "Unauthorized"
        );
        assert_eq!(error_message(StatusCode::BAD_GATEWAY, ""), "Bad Gateway");
        assert!(error_message(StatusCode::BAD_GATEWAY, &"x".repeat(2000)).len() < 600);
    }
}
