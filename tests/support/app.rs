//! `TestApp`: the real [`followd::Application`] on port 0 with a temporary `data_dir` and rules, its upstream
//! pointed at a [`FakeUpstream`], and request helpers that sign like a real sender. It runs on the embedded
//! store by default, or on a private `redis-server` of its own ([`TestAppBuilder::store`]), so a scenario can
//! run on both backends.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use followd::config::Config;
use followd::queue::{Queue, Stores};
use followd::{Application, Role};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use super::redis::RedisServer;
use super::upstream::{FakeUpstream, TOKEN};

/// Which backend a test app's store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The embedded redb store in the app's `data_dir` (the default).
    Embedded,
    /// A private `redis-server` started for this app.
    Redis,
}

pub const SECRET: &str = "test-webhook-secret";
pub const SIGNATURE_HEADER: &str = "x-signature";

/// Rules most tests use: aliases, a team, one rule per event kind.
pub const RULES: &str = r#"
[users]
alice = "usr_alice"
bob = "usr_bob"
sdr_team = ["usr_s1", "usr_s2", "usr_s3"]

[[rule]]
name = "vip-gets-account-team"
when = { event = "tag_added", tag = "vip" }
then = { add = ["alice", "bob"] }

[[rule]]
name = "vip-removed-drops-account-team"
when = { event = "tag_removed", tag = "vip" }
then = { remove = ["alice", "bob"] }

[[rule]]
name = "won-deals-reset"
when = { event = "stage_changed", pipeline = "Sales", stage = "Closed Won" }
then = { remove_all = true, add = ["alice"] }

[[rule]]
name = "facebook-leads-round-robin"
when = { event = "contact_created", source = "Facebook Ads" }
then = { round_robin = "sdr_team" }
"#;

/// HMAC-SHA256 header value for `body`, as the `hmac-sha256` scheme expects.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A generic `tag_added` / `tag_removed` event.
pub fn tag_event(id: &str, kind: &str, contact: &str, tag: &str) -> Vec<u8> {
    serde_json::json!({"id": id, "type": kind, "location_id": "loc-1", "contact_id": contact, "tag": tag})
        .to_string()
        .into_bytes()
}

pub struct TestAppBuilder {
    rules: String,
    role: Role,
    data_dir: Option<PathBuf>,
    extra: String,
    token: bool,
    ghl_keys: Vec<String>,
    tail: String,
    store: Store,
}

impl TestAppBuilder {
    /// Runs the app's store on `store`.
    pub fn store(mut self, store: Store) -> Self {
        self.store = store;
        self
    }

    pub fn rules(mut self, rules: &str) -> Self {
        self.rules = rules.to_owned();
        self
    }

    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Reuses a data directory, e.g. to restart on the same queue.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Extra top-level TOML, appended before the tables the builder writes.
    pub fn config(mut self, toml: &str) -> Self {
        self.extra = toml.to_owned();
        self
    }

    /// The `ghl` source verifies with these public key files instead of GoHighLevel's published keys.
    pub fn ghl_keys(mut self, paths: &[String]) -> Self {
        self.ghl_keys = paths.to_vec();
        self
    }

    /// No upstream token: the dry run.
    pub fn dry_run(mut self) -> Self {
        self.token = false;
        self
    }

    pub async fn spawn(self) -> TestApp {
        self.spawn_with(FakeUpstream::start().await.into()).await
    }

    /// Starts with `tail` appended at the end of the configuration (e.g. one more `[[source]]`).
    pub async fn spawn_with_tail(mut self, tail: &str) -> TestApp {
        self.tail = tail.to_owned();
        self.spawn_with(FakeUpstream::start().await.into()).await
    }

    /// Starts against an existing fake upstream (shared across a restart).
    pub async fn spawn_with(self, upstream: Arc<FakeUpstream>) -> TestApp {
        let dir = tempfile::tempdir().expect("temporary directory");
        let rules_dir = dir.path().join("rules");
        std::fs::create_dir_all(&rules_dir).expect("rules dir");
        std::fs::write(rules_dir.join("rules.toml"), &self.rules).expect("write rules");
        let data_dir = self.data_dir.unwrap_or_else(|| dir.path().join("data"));
        let redis = match self.store {
            Store::Embedded => None,
            Store::Redis => Some(RedisServer::start().await),
        };
        let redis_url = redis.as_ref().map(|r| format!("redis_url = \"{}\"", r.url())).unwrap_or_default();
        let token = if self.token { format!("token = \"{TOKEN}\"") } else { String::new() };
        let ghl_verify = if self.ghl_keys.is_empty() {
            "{ scheme = \"ghl\" }".to_owned()
        } else {
            let keys: Vec<String> = self.ghl_keys.iter().map(|k| format!("\"file:{k}\"")).collect();
            format!("{{ scheme = \"ghl\", public_keys = [{}] }}", keys.join(", "))
        };
        let text = format!(
            r#"
listen = "127.0.0.1:0"
data_dir = "{data}"
rules_dir = "{rules}"
workers = 4
http_workers = 2
shutdown_grace = "3s"
{redis_url}
{extra}

[upstream]
base_url = "{upstream}"
timeout = "2s"
{token}

[queue]
lease = "5s"

[[source]]
name = "test"
format = "generic"
verify = {{ scheme = "hmac-sha256", header = "{SIGNATURE_HEADER}", secrets = ["old-secret", "{SECRET}"] }}

[[source]]
name = "tokened"
format = "generic"
verify = {{ scheme = "token", header = "authorization", tokens = ["sesame"] }}

[[source]]
name = "ghl"
format = "ghl"
verify = {ghl_verify}

[[source]]
name = "workflow"
format = "ghl-workflow"
verify = {{ scheme = "token", header = "authorization", tokens = ["wf-secret"] }}

{tail}
"#,
            tail = self.tail,
            data = data_dir.display(),
            rules = rules_dir.display(),
            extra = self.extra,
            upstream = upstream.url,
        );
        let config = Config::from_toml(&text, dir.path()).expect("test configuration");
        let app = Application::build(config, self.role).await.expect("application builds");
        let addr = format!("http://{}", app.local_addr());
        let stores = app.stores();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let handle = tokio::spawn(app.run_until_stopped(async move { stopped.cancelled().await }));
        TestApp {
            addr,
            client: reqwest::Client::new(),
            upstream,
            queue: Arc::clone(&stores.queue),
            stores,
            stop,
            handle: Some(handle),
            dir,
            data_dir,
            _redis: redis,
        }
    }
}

pub struct TestApp {
    pub addr: String,
    pub client: reqwest::Client,
    pub upstream: Arc<FakeUpstream>,
    pub queue: Arc<dyn Queue>,
    /// Every trait of the app's store, for assertions on what it holds.
    pub stores: Stores,
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    /// The app's own Redis, when it runs on one; stopped with the app.
    _redis: Option<RedisServer>,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            rules: RULES.to_owned(),
            role: Role::All,
            data_dir: None,
            extra: String::new(),
            token: true,
            ghl_keys: Vec::new(),
            tail: String::new(),
            store: Store::Embedded,
        }
    }

    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    /// POSTs `body` to the `test` source, signed with the current secret.
    pub async fn post_signed(&self, body: &[u8]) -> reqwest::Response {
        self.post("test", body, &[(SIGNATURE_HEADER, &sign(SECRET, body))]).await
    }

    pub async fn post(&self, source: &str, body: &[u8], headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/webhooks/{source}", self.addr))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request reaches the app")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.addr)).send().await.expect("request reaches the app")
    }

    /// Asserts that the store holds nothing queued: no pending operation, no ready or leased contact.
    pub async fn assert_nothing_queued(&self) {
        let stats = self.queue.stats().await.expect("the store answers");
        assert_eq!((stats.pending, stats.ready, stats.leased), (0, 0, 0), "something was queued: {stats:?}");
    }

    /// Waits until nothing is pending or leased; panics after 15 s.
    pub async fn wait_until_idle(&self) {
        let queue = Arc::clone(&self.queue);
        let idle = super::eventually(Duration::from_secs(15), || {
            let queue = Arc::clone(&queue);
            async move { queue.stats().await.is_ok_and(|s| s.pending == 0 && s.leased == 0) }
        })
        .await;
        assert!(idle, "the queue did not drain: {:?}", self.queue.stats().await);
    }

    /// Stops the application as SIGTERM would and waits until it has released its data directory.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("the app task").expect("the app stops cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
