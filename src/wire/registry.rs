//! The schema registry client: Confluent Schema Registry REST (`GET /schemas/ids/{id}`, and
//! `GET /subjects/{s}/versions/{v}` for references), parsed schemas cached by id for the life
//! of the client, one fetch per id even under concurrent lookups. Credentials are [`Secret`]s:
//! never in `Debug`, `Display` or an error. Limits: failures are not cached (an unknown id is
//! asked for again by the next record that carries it); nothing is ever evicted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use serde::Deserialize;

use super::{ParsedSchema, SchemaFormat};
use crate::config::Secret;

/// The media type of Confluent Schema Registry requests and answers.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Most schemas (the schema and its transitive references) one id may bring.
const MAX_SCHEMAS: usize = 64;

/// How the client authenticates. The secrets come from files or env vars
/// ([`crate::config::SecretSource::resolve`]). `Debug` shows only the kind.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No `Authorization` header.
    #[default]
    None,
    /// HTTP basic auth (Confluent Cloud: API key and secret).
    Basic { username: String, password: Secret },
    /// `Authorization: Bearer <token>`.
    Bearer { token: Secret },
}

impl Credentials {
    /// `none`, `basic` or `bearer`.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::None => "none",
            Credentials::Basic { .. } => "basic",
            Credentials::Bearer { .. } => "bearer",
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({})", self.kind())
    }
}

/// Where the registry is and how to reach it.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible API (`https://host`, or Apicurio's
    /// `http://host:port/apis/ccompat/v7`). No credentials in it: use `credentials`.
    pub url: String,
    /// Authentication.
    pub credentials: Credentials,
    /// TCP (+TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one whole request.
    pub request_timeout: Duration,
    /// Extra root certificates (PEM), for a registry behind a private CA.
    pub ca_pem: Option<Vec<u8>>,
}

impl RegistryConfig {
    /// `url` with no credentials, 5 s to connect, 10 s per request.
    pub fn new(url: impl Into<String>) -> Self {
        RegistryConfig {
            url: url.into(),
            credentials: Credentials::None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            ca_pem: None,
        }
    }
}

/// Why a schema could not be had. [`RegistryError::is_transient`] says whether waiting helps.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Transient: no answer (connect error, timeout, connection cut mid-answer).
    #[error("schema registry {base} unreachable for schema {id}: {reason}")]
    Unreachable { base: String, id: u32, reason: String },
    /// Transient: an answer that says nothing about the id (5xx, 429, 401/403, a 404 that is
    /// not the API's "schema not found", a body that is not the API's).
    #[error("schema registry {base} answered {status} for schema {id}: {message}")]
    Answer {
        base: String,
        id: u32,
        status: u16,
        message: String,
    },
    /// Permanent: the registry has no schema with this id (404, error code 40403).
    #[error("schema {id} is unknown to the registry {base} (404, error code 40403)")]
    UnknownId { base: String, id: u32 },
    /// Permanent: the schema (or a reference) does not parse, or is of a type not supported.
    #[error("schema {id} is not usable: {reason}")]
    BadSchema { id: u32, reason: String },
    /// The client's configuration is wrong (bad URL, credentials in the URL, bad CA file).
    #[error("schema registry configuration: {0}")]
    Config(String),
}

impl RegistryError {
    /// Whether the same lookup may succeed later: the partition should wait and retry, not
    /// park the record. Configuration errors count as transient: the record is not at fault.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            RegistryError::UnknownId { .. } | RegistryError::BadSchema { .. }
        )
    }
}

/// A registry client. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Registry {
    fetcher: Fetcher,
    slots: Arc<Mutex<HashMap<u32, Slot>>>,
}

type Fetch = Shared<BoxFuture<'static, Result<Arc<ParsedSchema>, RegistryError>>>;

enum Slot {
    Ready(Arc<ParsedSchema>),
    Fetching(Fetch),
}

/// What one fetch needs; owned by the fetch future, so the cache holds no cycle.
#[derive(Clone)]
struct Fetcher {
    base: url::Url,
    http: reqwest::Client,
    credentials: Credentials,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.fetcher.base.as_str())
            .field("auth", &self.fetcher.credentials.kind())
            .field("cached", &self.cached())
            .finish()
    }
}

impl Registry {
    /// A client for `config`. Fails on a URL that does not parse or carries credentials.
    pub fn new(config: &RegistryConfig) -> Result<Self, RegistryError> {
        let mut base = url::Url::parse(config.url.trim())
            .map_err(|e| RegistryError::Config(format!("registry URL does not parse: {e}")))?;
        if !base.username().is_empty() || base.password().is_some() {
            return Err(RegistryError::Config(
                "registry URL carries credentials; set them as basic or bearer credentials instead".into(),
            ));
        }
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(RegistryError::Config(format!(
                "registry URL must be http or https, not {}",
                base.scheme()
            )));
        }
        base.path_segments_mut()
            .map_err(|()| RegistryError::Config("registry URL cannot take a path".into()))?
            .pop_if_empty();
        let mut http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("elevate-sink/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| RegistryError::Config(format!("CA certificates: {}", chain(&e))))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| RegistryError::Config(format!("HTTP client: {}", chain(&e))))?;
        Ok(Registry {
            fetcher: Fetcher {
                base,
                http,
                credentials: config.credentials.clone(),
            },
            slots: Arc::default(),
        })
    }

    /// The base URL (never carries credentials).
    pub fn url(&self) -> &str {
        self.fetcher.base.as_str()
    }

    /// How many schemas are cached.
    pub fn cached(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.values().filter(|s| matches!(s, Slot::Ready(_))).count()
    }

    /// The parsed schema of `id`: from the cache, or fetched once however many callers ask at
    /// the same time (they all get that one fetch's result). Failures are not cached.
    pub async fn schema(&self, id: u32) -> Result<Arc<ParsedSchema>, RegistryError> {
        let fetch = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.get(&id) {
                Some(Slot::Ready(s)) => return Ok(Arc::clone(s)),
                Some(Slot::Fetching(f)) => f.clone(),
                None => {
                    let f = settle(self.fetcher.clone(), Arc::downgrade(&self.slots), id)
                        .boxed()
                        .shared();
                    slots.insert(id, Slot::Fetching(f.clone()));
                    f
                }
            }
        };
        fetch.await
    }
}

/// Fetches and parses `id`, then leaves the result in the cache (or clears the slot on error).
async fn settle(
    fetcher: Fetcher,
    slots: Weak<Mutex<HashMap<u32, Slot>>>,
    id: u32,
) -> Result<Arc<ParsedSchema>, RegistryError> {
    let result = fetcher.fetch(id).await.map(Arc::new);
    if let Some(slots) = slots.upgrade() {
        let mut slots = slots.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(s) => {
                slots.insert(id, Slot::Ready(Arc::clone(s)));
            }
            Err(_) => {
                slots.remove(&id);
            }
        }
    }
    result
}

/// The API's schema answer (`/schemas/ids/{id}` and `/subjects/{s}/versions/{v}`).
#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(Deserialize, Clone, PartialEq, Eq, Hash)]
struct Reference {
    name: String,
    subject: String,
    version: i64,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error_code: u32,
    #[serde(default)]
    message: String,
}

impl Fetcher {
    /// The schema of `id` with its references, parsed.
    async fn fetch(&self, id: u32) -> Result<ParsedSchema, RegistryError> {
        let root: SchemaAnswer = self.get(id, &["schemas", "ids", &id.to_string()]).await?;
        let format =
            SchemaFormat::from_api(root.schema_type.as_deref()).map_err(|t| RegistryError::BadSchema {
                id,
                reason: format!("schema type {t} is not supported (AVRO and PROTOBUF are)"),
            })?;
        let refs = self.references(id, &root.references).await?;
        ParsedSchema::parse(format, &root.schema, &refs)
            .map_err(|reason| RegistryError::BadSchema { id, reason })
    }

    /// Every schema `refs` lead to, transitively, as (import name, text), dependencies first.
    async fn references(&self, id: u32, refs: &[Reference]) -> Result<Vec<(String, String)>, RegistryError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut todo: Vec<Reference> = refs.iter().rev().cloned().collect();
        while let Some(r) = todo.pop() {
            if !seen.insert(r.clone()) {
                continue;
            }
            if seen.len() > MAX_SCHEMAS {
                return Err(RegistryError::BadSchema {
                    id,
                    reason: format!("more than {MAX_SCHEMAS} references"),
                });
            }
            let version = r.version.to_string();
            let got: SchemaAnswer = self
                .get(id, &["subjects", &r.subject, "versions", &version])
                .await
                .map_err(|e| match e {
                    RegistryError::UnknownId { .. } => RegistryError::BadSchema {
                        id,
                        reason: format!(
                            "reference {} ({} version {}) not found",
                            r.name, r.subject, r.version
                        ),
                    },
                    other => other,
                })?;
            todo.extend(got.references.iter().rev().cloned());
            out.push((r.name, got.schema));
        }
        out.reverse();
        Ok(out)
    }

    /// GET base + segments; a 2xx body as `T`, else the classified error.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        id: u32,
        segments: &[&str],
    ) -> Result<T, RegistryError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in Registry::new")
            .extend(segments);
        let req = self.http.get(url).header("accept", CONTENT_TYPE);
        let req = match &self.credentials {
            Credentials::None => req,
            Credentials::Basic { username, password } => req.basic_auth(username, Some(password.expose())),
            Credentials::Bearer { token } => req.bearer_auth(token.expose()),
        };
        let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
            base: self.base.to_string(),
            id,
            reason: chain(&e.without_url()),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(unreachable)?;
        classify(status, &body).map_err(|c| c.into_error(self.base.to_string(), id))?;
        serde_json::from_str(&body).map_err(|e| RegistryError::Answer {
            base: self.base.to_string(),
            id,
            status,
            message: format!("the body is not a schema answer: {e}"),
        })
    }
}

/// What a non-2xx answer means, before it is given the registry and id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 404 with the API's "schema not found" (40403) or "subject/version not found" codes.
    NotFound,
    /// Any other non-2xx answer.
    Other { status: u16, message: String },
}

impl Refusal {
    fn into_error(self, base: String, id: u32) -> RegistryError {
        match self {
            Refusal::NotFound => RegistryError::UnknownId { base, id },
            Refusal::Other { status, message } => RegistryError::Answer {
                base,
                id,
                status,
                message,
            },
        }
    }
}

/// Classifies an answer: 2xx is fine; a 404 is "not found" only with the API's own error code
/// (a 404 from a wrong base URL must not park every record); everything else is transient.
pub(crate) fn classify(status: u16, body: &str) -> Result<(), Refusal> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let api: Option<ErrorAnswer> = serde_json::from_str(body).ok();
    match (status, &api) {
        (
            404,
            Some(ErrorAnswer {
                error_code: 40401..=40403,
                ..
            }),
        ) => Err(Refusal::NotFound),
        _ => Err(Refusal::Other {
            status,
            message: match api {
                Some(a) => format!("error code {}: {}", a.error_code, clip(&a.message)),
                None => format!("not an API error body: {}", clip(body)),
            },
        }),
    }
}

/// At most 200 characters of a registry's text, on one line.
fn clip(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// An error and its sources, `: `-joined (reqwest puts the cause of a connect error there).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_apis_not_found_is_permanent() {
        assert_eq!(classify(200, "{}"), Ok(()));
        let nf = r#"{"error_code":40403,"message":"Schema 7 not found."}"#;
        assert_eq!(classify(404, nf), Err(Refusal::NotFound));
        let transient = |status, body| {
            Refusal::Other {
                status,
                message: String::new(),
            }
            .into_error("b".into(), 1)
            .is_transient()
                && matches!(classify(status, body), Err(Refusal::Other { .. }))
        };
        assert!(
            transient(404, "<html>no such path</html>"),
            "a wrong base URL waits, it does not park"
        );
        assert!(transient(500, r#"{"error_code":50001,"message":"store"}"#));
        assert!(transient(503, ""));
        assert!(transient(429, "slow down"));
        assert!(transient(401, r#"{"error_code":401,"message":"Unauthorized"}"#));
        assert!(!RegistryError::UnknownId {
            base: "b".into(),
            id: 1
        }
        .is_transient());
        assert!(!RegistryError::BadSchema {
            id: 1,
            reason: "x".into()
        }
        .is_transient());
    }

    #[test]
    fn answers_are_clipped_to_one_line() {
        let long = "x\n".repeat(300);
        let Err(Refusal::Other { message, .. }) = classify(502, &long) else {
            panic!("502 is a refusal")
        };
        assert!(
            !message.contains('\n') && message.chars().count() < 240,
            "{message}"
        );
    }

    #[test]
    fn urls_with_credentials_or_odd_schemes_are_refused() {
        for bad in ["http://u:p@127.0.0.1:1", "ftp://127.0.0.1", "not a url"] {
            let e = Registry::new(&RegistryConfig::new(bad)).unwrap_err();
            assert!(matches!(e, RegistryError::Config(_)), "{bad}: {e}");
            assert!(!e.to_string().contains(":p@"), "{e}");
        }
        let r = Registry::new(&RegistryConfig::new("http://127.0.0.1:1/apis/ccompat/v7/")).unwrap();
        assert_eq!(r.url(), "http://127.0.0.1:1/apis/ccompat/v7");
    }
}
