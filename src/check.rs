//! `check`: loads a configuration exactly as `run` does and says what it would do. Guarantees:
//! an invalid config or an unreadable secret exits 1 with `error: <message>` naming the key;
//! secret values are never printed, only where they come from; `--sample` runs the real mapping
//! and request builder, so what it prints is what `run` would send, skip or dead-letter; a
//! wire-format sample (`--sample-format avro|protobuf`) is decoded through the registry first.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{
    Config, ElevateConfig, KafkaConfig, SchemaRegistryConfig, SecretSource, ValueFormat, ENV_PREFIX,
};
use crate::request::{build, endpoint_for};
use crate::route::{Kind, Routes};

/// Arguments of `elevate-sink check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Config file (TOML); every key can also come from ELEVATE_SINK__SECTION__KEY.
    #[arg(long, short, env = "ELEVATE_SINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Sample cart events (JSON lines, one JSON event, or a JSON array): print, per event, the
    /// requests it would send, or why it would be skipped or dead-lettered. With an Avro or
    /// Protobuf `--sample-format`, the file is one record value in the Confluent wire format,
    /// decoded through the configured `[registry]`.
    #[arg(long, value_name = "FILE")]
    pub sample: Option<PathBuf>,
    /// The sample's value format: json, avro or protobuf (default: `kafka.value_format`).
    #[arg(long, value_name = "FORMAT", requires = "sample")]
    pub sample_format: Option<ValueFormat>,
    /// The schema registry to decode a wire-format sample with, instead of `registry.url`.
    #[arg(long, value_name = "URL", requires = "sample")]
    pub registry_url: Option<String>,
    /// Print the default configuration as TOML and exit.
    #[arg(long, conflicts_with_all = ["sample", "print_reference"])]
    pub print_defaults: bool,
    /// Print the configuration reference (Markdown, generated from the code) and exit.
    #[arg(long, conflicts_with_all = ["sample", "print_defaults"])]
    pub print_reference: bool,
}

/// Runs `check`: exit 0 when the configuration is usable (sample dead-letters do not fail it),
/// 1 with `error: <message>` on stderr when it is not.
pub async fn main(args: CheckArgs) -> anyhow::Result<ExitCode> {
    if args.print_defaults {
        print!("{}", defaults_toml());
        return Ok(ExitCode::SUCCESS);
    }
    if args.print_reference {
        print!("{}", crate::config::reference::markdown());
        return Ok(ExitCode::SUCCESS);
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cfg = match Config::load(args.config.as_deref(), env.iter().cloned()) {
        Ok(cfg) => cfg,
        Err(e) => return Ok(fail(&e.to_string())),
    };
    let overrides: Vec<&str> = env
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.to_ascii_uppercase().starts_with(ENV_PREFIX))
        .collect();
    match checked_summary(&cfg, args.config.as_deref(), &overrides) {
        Ok(text) => print!("{text}"),
        Err(e) => return Ok(fail(&e)),
    }
    if let Some(path) = &args.sample {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return Ok(fail(&format!("cannot read sample file {}: {e}", path.display()))),
        };
        let format = args.sample_format.unwrap_or(cfg.kafka.value_format);
        let events = match format {
            ValueFormat::Json => split_sample(&bytes),
            wire => match wire_sample(&cfg, args.registry_url.as_deref(), wire, &bytes).await {
                Ok(event) => vec![event],
                Err(e) => return Ok(fail(&e)),
            },
        };
        print!("\n{}", sample_report(&cfg, &path.display().to_string(), &events));
    }
    Ok(ExitCode::SUCCESS)
}

/// What `check` does with a configuration that loaded: every secret source it names is read
/// (`kafka.secret_properties`, `registry.password`/`token`, `elevate.payment_api_key`, and
/// `registry.ca_file`), as `run` would at its start; the first that fails is the error, naming
/// the key and the file or variable, never a value. Then the summary.
pub fn checked_summary(cfg: &Config, path: Option<&Path>, overrides: &[&str]) -> Result<String, String> {
    cfg.resolve_every_secret().map_err(|e| e.to_string())?;
    Ok(summary(cfg, path, overrides))
}

fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(1)
}

/// The default configuration as TOML, with the one required section (`[elevate]`) explained.
pub fn defaults_toml() -> String {
    let body = toml::to_string(&Config::default()).expect("the default config serializes");
    let elevate_hint = "[elevate]\n\
        # Required, no default: where Elevate is. Give exactly one of\n\
        # cluster_id = \"w1234abcd\"                # with host = \"elevate-api\" or \"apptus\"\n\
        # base_url = \"https://w1234abcd.elevate-api.cloud\"\n";
    format!(
        "# elevate-sink configuration: every default, as `elevate-sink check --print-defaults` prints it.\n\
         # Every key can be overridden by ELEVATE_SINK__<SECTION>__<KEY>; see docs/config-reference.md.\n\n{}",
        body.replacen("[elevate]\n", elevate_hint, 1)
    )
}

fn secret_source(src: &SecretSource) -> String {
    match src {
        SecretSource::File(p) => format!("<from file {}>", p.display()),
        SecretSource::Env(v) => format!("<from env {v}>"),
    }
}

fn dur(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The `[kafka]` part of the summary: secret properties by source only.
fn kafka_summary(s: &mut String, k: &KafkaConfig) {
    let _ = writeln!(s, "kafka");
    let _ = writeln!(s, "  bootstrap.servers = {}", k.bootstrap_servers);
    let _ = writeln!(s, "  group.id = {}", k.group_id);
    let _ = writeln!(s, "  topics = {}", k.topics.join(", "));
    for (key, value) in &k.properties {
        let _ = writeln!(s, "  {key} = {value}");
    }
    for (key, src) in &k.secret_properties {
        let _ = writeln!(s, "  {key} = {}", secret_source(src));
    }
}

/// The `[elevate]` part of the summary: the endpoint, timeouts and visitor headers.
fn elevate_summary(s: &mut String, e: &ElevateConfig) {
    let _ = writeln!(s, "elevate");
    match e.base_url() {
        Ok(base) => {
            let _ = writeln!(s, "  base URL = {base} (each route's endpoint under routes)");
        }
        Err(err) => {
            let _ = writeln!(s, "  base URL = invalid: {err}");
        }
    }
    if let Some(src) = &e.payment_api_key {
        let _ = writeln!(s, "  payment_api_key = {}", secret_source(src));
    }
    let _ = writeln!(
        s,
        "  timeouts: connect {}, request {}; at most {} requests in flight",
        dur(e.connect_timeout),
        dur(e.request_timeout),
        e.max_in_flight_requests
    );
    let _ = writeln!(
        s,
        "  visitor headers: {}",
        if e.forward_visitor_headers {
            let levels: Vec<&str> = e.forward_ip_for.iter().map(|c| c.as_str()).collect();
            format!(
                "User-Agent forwarded; X-Forwarded-For for userContext {}",
                if levels.is_empty() {
                    "none".to_string()
                } else {
                    levels.join(", ")
                }
            )
        } else {
            "not forwarded".to_string()
        }
    );
}

/// The `[registry]` part of the summary, when one is configured: credentials by source only.
fn registry_summary(s: &mut String, r: &SchemaRegistryConfig) {
    let Some(url) = &r.url else { return };
    let _ = writeln!(s, "registry");
    let _ = writeln!(s, "  url = {url}");
    match (&r.username, &r.password, &r.token) {
        (Some(user), Some(pw), _) => {
            let _ = writeln!(s, "  basic auth: username {user}, password {}", secret_source(pw));
        }
        (_, _, Some(token)) => {
            let _ = writeln!(s, "  bearer token {}", secret_source(token));
        }
        _ => {
            let _ = writeln!(s, "  no credentials");
        }
    }
    if let Some(ca) = &r.ca_file {
        let _ = writeln!(s, "  ca_file = {}", ca.display());
    }
}

/// The routes part of the summary: per route its name, kind, endpoint, topics, event types and
/// own quota (the payment Api-Key by source only).
fn routes_summary(s: &mut String, cfg: &Config) {
    let routes = match Routes::from_config(cfg) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(s, "routes: invalid: {e}");
            return;
        }
    };
    let origin = if cfg.routes.is_empty() {
        "no [[routes]]: the default add-to-cart route".to_string()
    } else {
        plural(routes.routes.len(), "route")
    };
    let _ = writeln!(s, "routes ({origin})");
    let base = cfg.elevate.base_url().ok();
    for r in &routes.routes {
        let kind = r.tag.kind;
        let endpoint = match &base {
            Some(b) => endpoint_for(b, kind).to_string(),
            None => format!("{{base}}/{}", kind.path()),
        };
        let _ = writeln!(s, "  {} ({}): POST {endpoint}", r.tag.name, kind.as_str());
        if kind == Kind::Payment {
            let src = cfg.elevate.payment_api_key.as_ref().map(secret_source);
            let _ = writeln!(
                s,
                "    Api-Key: *** (elevate.payment_api_key {})",
                src.unwrap_or_else(|| "<not set>".into())
            );
        }
        let _ = writeln!(s, "    topics: {}", r.topics.join(", "));
        let _ = writeln!(
            s,
            "    event types (at {}): {}",
            r.mapping.event_type,
            r.mapping.add_to_cart_types.join(", ")
        );
        let quota = match r.requests_per_second {
            Some(rps) => format!("{rps} notifications/s on this replica, within [rate]"),
            None => "[rate] only".to_string(),
        };
        let _ = writeln!(s, "    quota: {quota}");
    }
}

/// The `[rate]` and `[retry]` parts of the summary.
fn rate_and_retry_summary(s: &mut String, cfg: &Config) {
    let r = &cfg.rate;
    let _ = writeln!(s, "rate");
    let _ = writeln!(
        s,
        "  quota = {} requests/s, burst {}{}",
        r.requests_per_second,
        r.burst,
        if r.share_by_partitions {
            ", shared across replicas by assigned partitions"
        } else {
            ", per replica"
        }
    );
    for (market, rps) in &r.markets {
        let _ = writeln!(s, "  market {market} = {rps} requests/s");
    }
    let t = &cfg.retry;
    let _ = writeln!(s, "retry");
    let _ = writeln!(
        s,
        "  backoff {} .. {} (full jitter), Retry-After honoured up to {}",
        dur(t.initial_backoff),
        dur(t.max_backoff),
        dur(t.max_retry_after)
    );
    let budget = match (t.max_attempts, t.max_elapsed.is_zero()) {
        (0, true) => "none (transient failures are retried until delivered)".to_string(),
        (0, false) => format!("{} then dead-letter", dur(t.max_elapsed)),
        (n, true) => format!("{n} attempts then dead-letter"),
        (n, false) => format!("{n} attempts or {}, then dead-letter", dur(t.max_elapsed)),
    };
    let _ = writeln!(s, "  transient budget: {budget}");
    let _ = writeln!(s, "  401/403/404: retried without limit, never dead-lettered");
}

/// What the configuration amounts to, for an operator; never a secret value.
pub fn summary(cfg: &Config, path: Option<&Path>, overrides: &[&str]) -> String {
    let mut s = String::new();
    let origin = match path {
        Some(p) => p.display().to_string(),
        None => "defaults (no file)".to_string(),
    };
    let _ = writeln!(s, "configuration OK: {origin}");
    if !overrides.is_empty() {
        let _ = writeln!(s, "  environment overrides: {}", overrides.join(", "));
    }
    kafka_summary(&mut s, &cfg.kafka);
    registry_summary(&mut s, &cfg.registry);
    elevate_summary(&mut s, &cfg.elevate);
    routes_summary(&mut s, cfg);
    rate_and_retry_summary(&mut s, cfg);
    let _ = writeln!(s, "dead_letter");
    let _ = writeln!(s, "  topic = {}", cfg.dead_letter.topic);
    for (key, value) in &cfg.dead_letter.properties {
        let _ = writeln!(s, "  {key} = {value}");
    }
    let p = &cfg.pipeline;
    let _ = writeln!(
        s,
        "pipeline: at most {} records / {} notifications in flight, commit every {}",
        p.max_in_flight_records,
        p.max_pending_notifications,
        dur(p.commit_interval)
    );
    let _ = writeln!(
        s,
        "shutdown: drain up to {} then commit, within a grace period of {}",
        dur(cfg.shutdown.drain_deadline),
        dur(cfg.shutdown.grace_period)
    );
    if cfg.admin.listen.is_empty() {
        let _ = writeln!(s, "admin: disabled");
    } else {
        let _ = writeln!(
            s,
            "admin: http://{} (/healthz /readyz /metrics)",
            cfg.admin.listen
        );
    }
    s
}

/// One event of a sample file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleEvent {
    /// Where it is in the file (`line 3`, `item 2`, `file`).
    pub label: String,
    /// The raw value, as a Kafka record would carry it (a wire-format value: decoded, as JSON).
    pub value: Vec<u8>,
    /// Why a wire-format value did not decode (`reason: detail`): `run` would park it.
    pub undecodable: Option<String>,
}

/// One wire-format sample value decoded as `run` would, through `registry_url` or else the
/// configured registry. A permanent failure is the event's `undecodable`; an unreachable
/// registry is the error (`check` does not wait for it).
pub async fn wire_sample(
    cfg: &Config,
    registry_url: Option<&str>,
    format: ValueFormat,
    bytes: &[u8],
) -> Result<SampleEvent, String> {
    use crate::wire::{registry::Registry, Decoder, SchemaFormat};
    let mut registry = cfg.registry.clone();
    if let Some(url) = registry_url {
        registry.url = Some(url.to_string());
    }
    let client = crate::wire::source::registry_config(&registry)
        .map_err(|e| e.to_string())
        .and_then(|c| Registry::new(&c).map_err(|e| e.to_string()))?;
    let format = match format {
        ValueFormat::Avro => SchemaFormat::Avro,
        _ => SchemaFormat::Protobuf,
    };
    let mut event = SampleEvent {
        label: format!("{} wire format", format.as_str().to_ascii_lowercase()),
        value: Vec::new(),
        undecodable: None,
    };
    match Decoder::new(client, format).decode(bytes).await {
        Ok(value) => event.value = serde_json::to_vec(&value).expect("a JSON value serializes"),
        Err(e) if e.is_transient() => return Err(e.to_string()),
        Err(e) => event.undecodable = Some(format!("{}: {e}", e.reason())),
    }
    Ok(event)
}

/// Splits a sample file: a JSON array (one event per item), one JSON document, or JSON lines
/// (one event per non-blank line; a line that is not JSON is kept, to be dead-lettered).
pub fn split_sample(bytes: &[u8]) -> Vec<SampleEvent> {
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(trimmed) {
        return match v {
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| SampleEvent {
                    label: format!("item {}", i + 1),
                    value: serde_json::to_vec(item).expect("a JSON value serializes"),
                    undecodable: None,
                })
                .collect(),
            _ => vec![SampleEvent {
                label: "file".into(),
                value: trimmed.as_bytes().to_vec(),
                undecodable: None,
            }],
        };
    }
    // Not one document: JSON lines. Keep the original bytes of each line (invalid UTF-8 too).
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| line.iter().any(|b| !b.is_ascii_whitespace()))
        .map(|(i, line)| SampleEvent {
            label: format!("line {}", i + 1),
            value: line.strip_suffix(b"\r").unwrap_or(line).to_vec(),
            undecodable: None,
        })
        .collect()
}

/// What `run` would do with each sample event under `cfg`.
pub fn sample_report(cfg: &Config, file: &str, events: &[SampleEvent]) -> String {
    let mut s = String::new();
    let Ok(base) = cfg.elevate.base_url() else {
        return "sample: not mapped (no valid Elevate base URL)\n".into();
    };
    let routes = match crate::route::Routes::from_config(cfg) {
        Ok(r) => r,
        Err(e) => return format!("sample: not mapped ({e})\n"),
    };
    let (mut sent, mut skipped, mut dead) = (0usize, BTreeMap::<&str, usize>::new(), 0usize);
    let _ = writeln!(s, "sample {file}: {}", plural(events.len(), "event"));
    for (i, ev) in events.iter().enumerate() {
        let _ = write!(s, "\nevent {} ({}): ", i + 1, ev.label);
        if let Some(why) = &ev.undecodable {
            dead += 1;
            let _ = writeln!(s, "dead-letter: {why}");
            continue;
        }
        match routes.map_any(Some(&ev.value)) {
            Err(crate::route::RouteInvalid { invalid, route }) => {
                if let Some(r) = route {
                    let _ = write!(s, "route {}: ", r.name);
                }
                dead += 1;
                let _ = writeln!(s, "dead-letter: {}: {}", invalid.reason, invalid.detail);
            }
            Ok(mapped) => {
                let _ = writeln!(s, "{}", plural(mapped.notifications.len(), "notification"));
                for n in &mapped.notifications {
                    sent += 1;
                    let ep = crate::request::endpoint_for(&base, n.route.kind);
                    let req = build(&ep, n, crate::request::Forwarding::from_config(&cfg.elevate));
                    let _ = writeln!(s, "  {} {}    (cart line {})", req.method, req.url, n.line);
                    if n.route.name.as_ref() != crate::route::DEFAULT_ROUTE || cfg.routes.len() > 1 {
                        let _ = writeln!(s, "    route: {} ({})", n.route.name, n.route.kind.as_str());
                    }
                    for (name, value) in &req.headers {
                        let _ = writeln!(s, "    {name}: {value}");
                    }
                    if req.api_key {
                        let _ = writeln!(s, "    api-key: *** (elevate.payment_api_key)");
                    }
                    if !req.headers.iter().any(|(h, _)| *h == "user-agent") {
                        let _ = writeln!(s, "    user-agent: {}", cfg.elevate.user_agent);
                    }
                    let _ = writeln!(s, "    {}", req.body);
                }
                if !mapped.skipped.is_empty() {
                    let reasons: Vec<&str> = mapped.skipped.iter().map(|r| r.as_str()).collect();
                    for r in &reasons {
                        *skipped.entry(r).or_default() += 1;
                    }
                    let _ = writeln!(s, "  skip: {}", reasons.join(", "));
                }
            }
        }
    }
    let skipped_total: usize = skipped.values().sum();
    let by_reason: Vec<String> = skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let _ = writeln!(
        s,
        "\nsample summary: {} -> {}, {skipped_total} skipped{}, {dead} dead-lettered",
        plural(events.len(), "event"),
        plural(sent, "notification"),
        if by_reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_reason.join(", "))
        },
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::map_record;

    use crate::decode::InvalidReason;
    use crate::select::SkipReason;

    fn cfg() -> Config {
        Config::from_toml_with_env(
            "[elevate]\nbase_url = \"http://127.0.0.1:8080\"\n",
            "",
            Vec::<(String, String)>::new(),
        )
        .unwrap()
    }

    fn example(name: &str) -> &'static str {
        crate::demo::SAMPLE_EVENTS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no example {name}"))
            .1
    }

    #[test]
    fn embedded_examples_are_exactly_the_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/examples");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = crate::demo::SAMPLE_EVENTS
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "add new examples to demo::SAMPLE_EVENTS");
        for (name, text) in crate::demo::SAMPLE_EVENTS {
            let on_disk = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
            assert_eq!(&on_disk, text, "{name}");
        }
    }

    #[test]
    fn every_example_maps_and_invalid_ones_are_invalid() {
        let m = cfg().mapping;
        for (name, text) in crate::demo::SAMPLE_EVENTS {
            let r = map_record(&m, Some(text.as_bytes()));
            if name.starts_with("invalid-") {
                assert!(r.is_err(), "{name} should be invalid: {r:?}");
            } else {
                let mapped = r.unwrap_or_else(|e| panic!("{name} should map: {e}"));
                assert!(
                    !(mapped.notifications.is_empty() && mapped.skipped.is_empty()),
                    "{name}: every event is sent or skipped"
                );
            }
        }
    }

    #[test]
    fn examples_map_to_what_their_names_say() {
        use crate::decode::UserContext::*;
        let m = cfg().mapping;
        let map = |name: &str| map_record(&m, Some(example(name).as_bytes()));

        let single = map("add-to-cart-single.json").unwrap();
        assert_eq!(single.notifications.len(), 1);
        let n = &single.notifications[0];
        assert!(n.customer_key.is_some() && n.session_key.is_some() && n.user_context.is_none());
        assert!(n.user_agent.is_some() && n.visitor_ip.is_some());

        let multi = map("add-to-cart-multi-line.json").unwrap();
        let lines: Vec<usize> = multi.notifications.iter().map(|n| n.line).collect();
        assert_eq!(lines, vec![0, 4]);
        assert_eq!(
            multi.skipped,
            vec![
                SkipReason::NotFromElevate,
                SkipReason::NoTicket,
                SkipReason::NoTicket,
                SkipReason::NotFromElevate
            ]
        );
        assert_eq!(multi.notifications[0].user_context, Some(Personalized));
        assert_eq!(multi.event_time_ms, Some(1_796_033_760_000));

        let unp = &map("add-to-cart-unpersonalized.json").unwrap().notifications[0];
        assert_eq!(unp.user_context, Some(Unpersonalized));
        assert!(unp.customer_key.is_none() && unp.session_key.is_some());

        let anon = &map("add-to-cart-anonymous.json").unwrap().notifications[0];
        assert_eq!(anon.user_context, Some(Anonymous));
        assert!(anon.customer_key.is_none() && anon.session_key.is_none());

        let synth = &map("add-to-cart-synthetic.json").unwrap().notifications[0];
        assert_eq!(synth.user_context, Some(Synthetic));
        assert!(synth.customer_key.is_none() && synth.session_key.is_some());

        let not_elevate = map("add-to-cart-not-from-elevate.json").unwrap();
        assert!(not_elevate.notifications.is_empty());
        assert_eq!(not_elevate.skipped, vec![SkipReason::NotFromElevate; 2]);

        // A click is no add-to-cart event: the default route skips it, a click route sends it.
        for name in ["page-view.json", "remove-from-cart.json", "click.json"] {
            assert_eq!(
                map(name).unwrap().skipped,
                vec![SkipReason::NotAddToCart],
                "{name}"
            );
        }

        let clicks = Config::from_toml_with_env(
            "[elevate]\nbase_url = \"http://h\"\n[[routes]]\nname = \"clicks\"\nkind = \"click\"\n",
            "",
            Vec::<(String, String)>::new(),
        )
        .unwrap();
        let routes = crate::route::Routes::from_config(&clicks).unwrap();
        let click = routes
            .map("cart-events", Some(example("click.json").as_bytes()))
            .unwrap();
        assert_eq!(click.notifications.len(), 1);
        let n = &click.notifications[0];
        assert_eq!(n.route.kind, crate::route::Kind::Click);
        assert_eq!(n.ticket(), Some("Q2xpY2tlZC1pbi1hbi1FbGV2YXRlLWxpc3Rpbmc"));
        assert!(n.customer_key.is_some() && n.session_key.is_some() && n.user_agent.is_some());

        let e = map("invalid-missing-customer-key.json").unwrap_err();
        assert_eq!(e.reason, InvalidReason::MissingField);
        assert!(e.detail.contains("customerKey"), "{e}");
        let e = map("invalid-ticket-number.json").unwrap_err();
        assert_eq!(e.reason, InvalidReason::WrongType);
        assert!(e.detail.contains("ticket"), "{e}");
    }

    #[test]
    fn sample_files_of_every_form_are_split() {
        let lines = split_sample(b"{\"type\":\"a\"}\n\n{\"type\":\"b\"}\r\nnot json\n");
        let labels: Vec<&str> = lines.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels, vec!["line 1", "line 3", "line 4"]);
        assert_eq!(lines[1].value, b"{\"type\":\"b\"}");
        let array = split_sample(b"[{\"type\":\"a\"}, {\"type\":\"b\"}]");
        assert_eq!(array.len(), 2);
        assert_eq!(array[1].label, "item 2");
        let one = split_sample(example("add-to-cart-single.json").as_bytes());
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].label, "file");
    }

    #[test]
    fn sample_report_shows_requests_skips_and_dead_letters() {
        let events: Vec<SampleEvent> = [
            "add-to-cart-multi-line.json",
            "page-view.json",
            "invalid-ticket-number.json",
        ]
        .iter()
        .map(|n| SampleEvent {
            label: n.to_string(),
            value: serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(example(n)).unwrap())
                .unwrap(),
            undecodable: None,
        })
        .chain([SampleEvent {
            label: "avro wire format".into(),
            value: Vec::new(),
            undecodable: Some("unknown_schema_id: schema 7 is unknown".into()),
        }])
        .collect();
        let out = sample_report(&cfg(), "x.jsonl", &events);
        assert!(
            out.contains("POST http://127.0.0.1:8080/api/storefront/v3/notifications/add-to-cart?customerKey=c-77a01e&market=SE&sessionKey=s-3c9f2d10&userContext=PERSONALIZED"),
            "{out}"
        );
        assert!(
            out.contains("{\"ticket\":\"T2xpbmUtMS1lbGV2YXRlLXNlYXJjaA\"}"),
            "{out}"
        );
        assert!(
            out.contains("skip: not_from_elevate, no_ticket, no_ticket, not_from_elevate"),
            "{out}"
        );
        assert!(out.contains("skip: not_add_to_cart"), "{out}");
        assert!(out.contains("dead-letter: wrong_type: lines[0] ticket"), "{out}");
        assert!(
            out.contains("event 4 (avro wire format): dead-letter: unknown_schema_id: schema 7"),
            "{out}"
        );
        assert!(out.contains("4 events -> 2 notifications, 5 skipped"), "{out}");
        assert!(out.contains("2 dead-lettered"), "{out}");
    }

    #[test]
    fn summary_shows_secret_sources_never_values() {
        std::env::set_var("ELEVATE_SINK_CHECK_TEST_SECRET", "s3cr3t-value");
        let text = "[elevate]\ncluster_id = \"w1\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
                    [kafka.secret_properties]\n\"sasl.password\" = { env = \"ELEVATE_SINK_CHECK_TEST_SECRET\" }\n\
                    \"ssl.key.password\" = { file = \"/run/secrets/key\" }\n";
        let c = Config::from_toml_with_env(text, "", Vec::<(String, String)>::new()).unwrap();
        let out = summary(&c, Some(Path::new("/etc/x.toml")), &["ELEVATE_SINK__RATE__BURST"]);
        assert!(
            out.contains("sasl.password = <from env ELEVATE_SINK_CHECK_TEST_SECRET>"),
            "{out}"
        );
        assert!(
            out.contains("ssl.key.password = <from file /run/secrets/key>"),
            "{out}"
        );
        assert!(out.contains("POST https://w1.elevate-api.cloud/api/storefront/v3/notifications/add-to-cart"));
        assert!(out.contains("ELEVATE_SINK__RATE__BURST"), "{out}");
        assert!(!out.contains("s3cr3t-value"), "{out}");
    }

    /// A cart + order config whose payment Api-Key comes from `key_src`, with `extra` TOML
    /// appended (e.g. a `[registry]`).
    fn routes_cfg(key_src: &str, extra: &str) -> Config {
        let text = format!(
            "[kafka]\ntopics = [\"shop.cart-events\", \"shop.orders\"]\n\
             [elevate]\ncluster_id = \"w1\"\npayment_api_key = {key_src}\n{extra}\n\
             [[routes]]\nname = \"cart\"\nkind = \"add-to-cart\"\ntopics = [\"shop.cart-events\"]\n\
             [[routes]]\nname = \"clicks\"\nkind = \"click\"\ntopics = [\"shop.cart-events\"]\n\
             event_types = [\"product_click\"]\nrequests_per_second = 5.0\n\
             [[routes]]\nname = \"payments\"\nkind = \"payment\"\ntopics = [\"shop.orders\"]\n"
        );
        Config::from_toml_with_env(&text, "", Vec::<(String, String)>::new()).unwrap()
    }

    #[test]
    fn check_reads_every_secret_source_and_names_the_key_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-key");
        let err = |c: &Config| checked_summary(c, None, &[]).unwrap_err();

        // The payment Api-Key, from a file that is not there or a variable that is not set.
        let e = err(&routes_cfg(
            &format!("{{ file = {:?} }}", missing.display().to_string()),
            "",
        ));
        assert!(e.starts_with("elevate.payment_api_key: "), "{e}");
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let e = err(&routes_cfg("{ env = \"CHECK_TEST_UNSET_API_KEY\" }", ""));
        assert!(e.starts_with("elevate.payment_api_key: "), "{e}");
        assert!(e.contains("CHECK_TEST_UNSET_API_KEY"), "{e}");

        // A key that is there but cannot be a header value: named, its value never shown.
        let bad = dir.path().join("bad-key");
        std::fs::write(&bad, "adm\u{7f}in-s3cr3t").unwrap();
        let e = err(&routes_cfg(
            &format!("{{ file = {:?} }}", bad.display().to_string()),
            "",
        ));
        assert!(e.starts_with("elevate.payment_api_key: file "), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");

        // The registry's password and token, and its CA file.
        let good = dir.path().join("api-key");
        std::fs::write(&good, "adm-s3cr3t-key\n").unwrap();
        let key = format!("{{ file = {:?} }}", good.display().to_string());
        let registry = |creds: &str| {
            routes_cfg(
                &key,
                &format!("[registry]\nurl = \"http://127.0.0.1:9\"\n{creds}"),
            )
        };
        let e = err(&registry(
            "username = \"u\"\npassword = { env = \"CHECK_TEST_UNSET_PW\" }\n",
        ));
        assert!(
            e.starts_with("registry.password: ") && e.contains("CHECK_TEST_UNSET_PW"),
            "{e}"
        );
        let e = err(&registry(&format!(
            "token = {{ file = {:?} }}\n",
            missing.display().to_string()
        )));
        assert!(e.starts_with("registry.token: "), "{e}");
        let e = err(&registry(&format!(
            "ca_file = {:?}\n",
            missing.display().to_string()
        )));
        assert!(e.starts_with("registry.ca_file: "), "{e}");

        // Everything readable: OK, and the summary shows sources only.
        std::env::set_var("CHECK_TEST_SET_PW", "pw-s3cr3t");
        let ok = checked_summary(
            &registry("username = \"u\"\npassword = { env = \"CHECK_TEST_SET_PW\" }\n"),
            None,
            &[],
        )
        .unwrap();
        assert!(!ok.contains("s3cr3t"), "{ok}");
        assert!(
            ok.contains(&format!("payment_api_key = <from file {}>", good.display())),
            "{ok}"
        );
        assert!(ok.contains("password <from env CHECK_TEST_SET_PW>"), "{ok}");
    }

    #[test]
    fn summary_lists_every_route_with_kind_topics_event_types_and_quota() {
        let c = routes_cfg("{ env = \"CHECK_TEST_ROUTES_KEY\" }", "");
        let out = summary(&c, None, &[]);
        let routes = out
            .split("\nroutes (")
            .nth(1)
            .unwrap_or_else(|| panic!("no routes section: {out}"));
        let want = [
            "3 routes)",
            "  cart (add-to-cart): POST https://w1.elevate-api.cloud/api/storefront/v3/notifications/add-to-cart",
            "    topics: shop.cart-events",
            "    event types (at /type): add_to_cart",
            "    quota: [rate] only",
            "  clicks (click): POST https://w1.elevate-api.cloud/api/storefront/v3/notifications/click",
            "    event types (at /type): product_click",
            "    quota: 5 notifications/s on this replica, within [rate]",
            "  payments (payment): POST https://w1.elevate-api.cloud/api/admin/v4/notifications/payment",
            "    Api-Key: *** (elevate.payment_api_key <from env CHECK_TEST_ROUTES_KEY>)",
            "    topics: shop.orders",
            "    event types (at /type): order_placed",
        ];
        for line in want {
            assert!(routes.contains(line), "missing {line:?} in:\n{out}");
        }
        // Without [[routes]]: the one default route, fed by every topic.
        let out = summary(&cfg(), None, &[]);
        assert!(
            out.contains("routes (no [[routes]]: the default add-to-cart route)\n  add-to-cart (add-to-cart): POST http://127.0.0.1:8080/api/storefront/v3/notifications/add-to-cart\n    topics: cart-events\n"),
            "{out}"
        );
    }

    #[test]
    fn printed_defaults_are_the_defaults() {
        let text = defaults_toml();
        assert!(text.contains("# cluster_id = "), "{text}");
        let with_elevate = text.replacen("# base_url = ", "base_url = ", 1);
        let parsed = Config::from_toml_with_env(&with_elevate, "", Vec::<(String, String)>::new()).unwrap();
        let mut want = Config::default();
        want.elevate.base_url = Some("https://w1234abcd.elevate-api.cloud".into());
        assert_eq!(toml::to_string(&parsed).unwrap(), toml::to_string(&want).unwrap());
    }
}
