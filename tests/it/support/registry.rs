//! A real schema registry for the integration tests, and a small client for the part of the
//! Confluent Schema Registry REST API the service uses (register a schema, fetch it by id).
//!
//! The registry comes from `SCHEMA_REGISTRY_URL`: the Confluent-compatible base URL, normally
//! from `scripts/registry up` (Apicurio Registry, `http://127.0.0.1:PORT/apis/ccompat/v7`), which
//! CI runs. When it is unset the tests fail with the command to run: they never skip silently.
//! Tests make their own subjects ([`subject`]), so they run in parallel against one registry.
//!
//! The helpers panic with context on failure: they are for tests.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::kafka::unique;

/// Environment variable that names the registry (its Confluent-compatible base URL).
pub const URL_ENV: &str = "SCHEMA_REGISTRY_URL";

/// The media type of Confluent Schema Registry requests and responses.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The registry's base URL from `SCHEMA_REGISTRY_URL`, without a trailing `/`; panics, saying
/// how to start one, when it is unset.
pub fn url() -> String {
    match std::env::var(URL_ENV).map(|s| s.trim().trim_end_matches('/').to_owned()) {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "no schema registry for the integration tests: {URL_ENV} is unset.\n\
             Start the project's registry and point the tests at it:\n\n    \
             export {URL_ENV}=$(scripts/registry up)\n    cargo test --all-targets\n\n\
             (stop it later with `scripts/registry down`)"
        ),
    }
}

/// A subject no other test (nor an earlier run against the same registry) uses, in the
/// Confluent default naming (`TOPIC-value`).
pub fn subject(prefix: &str) -> String {
    format!("{}-value", unique(prefix))
}

/// Registers `schema` under a fresh [`subject`] made from `prefix`, at the registry the
/// environment names; its id (panics on an error answer, as [`Registry::register_ok`]).
pub async fn registered(prefix: &str, kind: SchemaType, schema: &str) -> u32 {
    Registry::from_env()
        .register_ok(&subject(prefix), kind, schema)
        .await
}

/// A schema's type as the Confluent API names it (`schemaType`; absent means Avro).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    Avro,
    Protobuf,
    Json,
}

impl SchemaType {
    fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Protobuf => "PROTOBUF",
            SchemaType::Json => "JSON",
        }
    }
}

/// `GET /schemas/ids/{id}`: the schema text and its type.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Schema {
    pub schema: String,
    /// Absent for Avro (the API's default type).
    #[serde(rename = "schemaType", default)]
    pub schema_type: Option<SchemaType>,
}

impl Schema {
    /// The type, with the API's default (Avro) applied.
    pub fn kind(&self) -> SchemaType {
        self.schema_type.unwrap_or(SchemaType::Avro)
    }
}

/// An error answer of the API: the HTTP status and the body's `error_code` and `message`
/// (e.g. 404 / 40403 "Schema not found").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub error_code: u32,
    pub message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: u32,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Registered {
    id: u32,
}

/// A client for the registry at [`url`].
#[derive(Clone, Debug)]
pub struct Registry {
    base: String,
    http: reqwest::Client,
}

impl Registry {
    /// The registry named by `SCHEMA_REGISTRY_URL` (see [`url`]).
    pub fn from_env() -> Self {
        Self::new(&url())
    }

    /// A client for the registry whose Confluent-compatible API is at `base`.
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("build HTTP client");
        Registry {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /subjects/{subject}/versions`: registers `schema` (or finds it already registered)
    /// and returns its id.
    pub async fn register(&self, subject: &str, kind: SchemaType, schema: &str) -> Result<u32, ApiError> {
        self.register_with_references(subject, kind, schema, &[]).await
    }

    /// [`Registry::register`] with references: (import name, subject, version) of schemas
    /// registered before (a Protobuf `import`, an Avro named type).
    pub async fn register_with_references(
        &self,
        subject: &str,
        kind: SchemaType,
        schema: &str,
        references: &[(&str, &str, u32)],
    ) -> Result<u32, ApiError> {
        let mut body = json!({ "schema": schema });
        if kind != SchemaType::Avro {
            body["schemaType"] = json!(kind.as_str());
        }
        if !references.is_empty() {
            body["references"] = references
                .iter()
                .map(|(name, subject, version)| json!({"name": name, "subject": subject, "version": version}))
                .collect();
        }
        let url = self.url(&["subjects", subject, "versions"]);
        let resp = self.send(self.http.post(&url).json(&body), &url).await;
        Self::answer::<Registered>(resp, &url).await.map(|r| r.id)
    }

    /// [`Registry::register`] that panics on an error answer.
    pub async fn register_ok(&self, subject: &str, kind: SchemaType, schema: &str) -> u32 {
        match self.register(subject, kind, schema).await {
            Ok(id) => id,
            Err(e) => panic!(
                "registering a {kind:?} schema under {subject:?} at {} failed: {e:?}",
                self.base
            ),
        }
    }

    /// `GET /schemas/ids/{id}`.
    pub async fn schema_by_id(&self, id: u32) -> Result<Schema, ApiError> {
        let url = self.url(&["schemas", "ids", &id.to_string()]);
        let resp = self.send(self.http.get(&url), &url).await;
        Self::answer::<Schema>(resp, &url).await
    }

    /// `base` + the segments, each percent-encoded as one path segment.
    fn url(&self, segments: &[&str]) -> String {
        let mut u = url::Url::parse(&self.base)
            .unwrap_or_else(|e| panic!("{URL_ENV}={} is not a URL: {e}", self.base));
        u.path_segments_mut()
            .unwrap_or_else(|()| panic!("{URL_ENV}={} cannot take a path", self.base))
            .pop_if_empty()
            .extend(segments);
        u.into()
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> reqwest::Response {
        req.header("accept", CONTENT_TYPE)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "schema registry at {} not answering ({url}: {e}).\n\
                 Is it running? `scripts/registry status`; start it with \
                 `export {URL_ENV}=$(scripts/registry up)`",
                    self.base
                )
            })
    }

    /// A 2xx body as `T`, or the API error of any other status.
    async fn answer<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
        url: &str,
    ) -> Result<T, ApiError> {
        let status = resp.status();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("reading the answer of {url}: {e}"));
        if status.is_success() {
            return Ok(serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("{url} answered {status} with an unexpected body ({e}): {text}")
            }));
        }
        let body: ErrorBody = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{url} answered {status} without an API error body ({e}): {text}"));
        Err(ApiError {
            status: status.as_u16(),
            error_code: body.error_code,
            message: body.message,
        })
    }
}
