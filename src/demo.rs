//! `demo`: the real `run` pipeline with zero setup — an in-process Kafka (librdkafka's mock
//! cluster), the in-process Elevate stand-in that enforces every kind's contract (the payment
//! `Api-Key` included), and the example events of `schemas/examples/` (cart events, on a cart
//! topic) and `schemas/examples/orders/` (order events, on an order topic), embedded so it works
//! from any directory. Three routes feed three kinds: add-to-cart and click from the cart topic,
//! payment from the order topic. Guarantees: it waits for conditions (committed offsets at the end
//! of every partition of both topics), never for fixed times; it exits 0 only when every record
//! was committed, every park was read back and every route got at least one 204; the Api-Key is a
//! fresh random value in a temporary file that is removed at the end, and never printed; clients
//! are dropped before the cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use crate::admin::Health;
use crate::config::{Config, LogConfig, LogFormat};
use crate::metrics::Metrics;
use elevate_standin::StandIn;

mod report;

/// The example cart events of `schemas/examples/`, embedded: (file name, JSON text).
pub const SAMPLE_EVENTS: &[(&str, &str)] = &[
    (
        "add-to-cart-single.json",
        include_str!("../schemas/examples/add-to-cart-single.json"),
    ),
    (
        "add-to-cart-multi-line.json",
        include_str!("../schemas/examples/add-to-cart-multi-line.json"),
    ),
    (
        "add-to-cart-unpersonalized.json",
        include_str!("../schemas/examples/add-to-cart-unpersonalized.json"),
    ),
    (
        "add-to-cart-anonymous.json",
        include_str!("../schemas/examples/add-to-cart-anonymous.json"),
    ),
    (
        "add-to-cart-synthetic.json",
        include_str!("../schemas/examples/add-to-cart-synthetic.json"),
    ),
    (
        "add-to-cart-not-from-elevate.json",
        include_str!("../schemas/examples/add-to-cart-not-from-elevate.json"),
    ),
    ("click.json", include_str!("../schemas/examples/click.json")),
    (
        "page-view.json",
        include_str!("../schemas/examples/page-view.json"),
    ),
    (
        "remove-from-cart.json",
        include_str!("../schemas/examples/remove-from-cart.json"),
    ),
    (
        "invalid-missing-customer-key.json",
        include_str!("../schemas/examples/invalid-missing-customer-key.json"),
    ),
    (
        "invalid-ticket-number.json",
        include_str!("../schemas/examples/invalid-ticket-number.json"),
    ),
];

/// The example order events of `schemas/examples/orders/`, embedded: (file name, JSON text).
pub const ORDER_EVENTS: &[(&str, &str)] = &[
    (
        "order-placed.json",
        include_str!("../schemas/examples/orders/order-placed.json"),
    ),
    (
        "order-anonymous.json",
        include_str!("../schemas/examples/orders/order-anonymous.json"),
    ),
    (
        "invalid-order-quantity.json",
        include_str!("../schemas/examples/orders/invalid-order-quantity.json"),
    ),
];

/// The demo's cart topic (the examples of `schemas/examples/`).
const CART_TOPIC: &str = "cart-events";
/// The demo's order topic (the examples of `schemas/examples/orders/`).
const ORDER_TOPIC: &str = "orders";
/// Each source topic and its partitions.
const TOPICS: [(&str, i32); 2] = [(CART_TOPIC, 3), (ORDER_TOPIC, 2)];
/// The demo's dead-letter topic.
const DEAD_LETTER_TOPIC: &str = "elevate-sink.dlq";
/// The demo's consumer group.
const GROUP: &str = "elevate-sink-demo";
/// Each example is produced this many times, with distinct tickets per round.
const ROUNDS: usize = 2;
/// Upper bound for the whole pipeline run (it normally takes about a second).
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The demo's routes, as an operator would write them (printed by the demo).
const ROUTES_TOML: &str = r#"[[routes]]
name = "cart"
kind = "add-to-cart"
topics = ["cart-events"]

[[routes]]
name = "clicks"
kind = "click"
topics = ["cart-events"]

[[routes]]
name = "payments"
kind = "payment"
topics = ["orders"]
"#;

/// One produced record and what it came from.
#[derive(Debug, Clone)]
struct Produced {
    /// Example file name.
    file: &'static str,
    /// Topic it went to.
    topic: &'static str,
    /// Partition it landed in.
    partition: i32,
    /// Its offset.
    offset: i64,
}

/// A (topic, partition).
type Tp = (&'static str, i32);

/// Runs the demo and prints its report; exit 0 when every record was committed.
pub async fn main() -> anyhow::Result<ExitCode> {
    crate::logging::init(&LogConfig {
        format: LogFormat::Text,
        // Dead-letters are expected here and reported below; real problems still show.
        level: "warn,elevate_sink::deadletter=error".into(),
    });
    let t0 = Instant::now();
    println!("elevate-sink demo: the real `run` pipeline, an in-process Kafka (librdkafka mock cluster)");
    println!(
        "and an in-process Elevate stand-in that answers 204 only to requests that follow their kind's contract.\n"
    );

    // The host client owns the mock cluster; it is dropped last.
    let host: FutureProducer = ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .set("linger.ms", "0")
        .set("log_level", "3")
        .create()
        .context("starting the librdkafka mock cluster")?;
    let key = ApiKeyFile::create().context("writing the demo's payment Api-Key file")?;
    let result = demo(&host, &key, t0).await;
    drop(key);
    host.flush(Duration::from_secs(1)).ok();
    drop(host);
    result
}

async fn demo(host: &FutureProducer, key: &ApiKeyFile, t0: Instant) -> anyhow::Result<ExitCode> {
    let bootstrap = mock_topics(host)?;
    let standin = StandIn::start_with_api_key(key.value.clone())
        .await
        .context("starting the Elevate stand-in")?;
    let topics: Vec<String> = TOPICS
        .iter()
        .map(|(t, n)| format!("{t} ({n} partitions)"))
        .collect();
    println!(
        "  kafka     mock cluster at {bootstrap}: topics {}, dead-letter topic {DEAD_LETTER_TOPIC}",
        topics.join(", ")
    );
    println!(
        "  elevate   stand-in at {}; it takes payments only with the Api-Key the service reads from {}",
        standin.base_url(),
        key.path.display()
    );
    println!("  routes    (the config's [[routes]]; elevate.payment_api_key = {{ file = .. }})");
    for line in ROUTES_TOML.lines().filter(|l| !l.is_empty()) {
        println!("              {line}");
    }
    let cfg = demo_config(&bootstrap, &standin.base_url(), &key.path)?;
    let sample = produce(host).await?;
    let (metrics, committed) = run_until_committed(&cfg, &sample.ends).await?;
    let accounted = report::report(&cfg, &standin, &sample, &metrics, &committed).await?;
    standin.shutdown().await;
    println!("\nfinished in {:.1} s", t0.elapsed().as_secs_f64());
    if !accounted {
        bail!("the demo did not account for every record");
    }
    println!("Next: `elevate-sink check --config FILE --sample events.jsonl`, then `elevate-sink run`.");
    Ok(ExitCode::SUCCESS)
}

/// The demo's payment `Api-Key`: a random value in a temporary file the service reads as
/// `elevate.payment_api_key = { file = .. }`; the file is removed on drop.
struct ApiKeyFile {
    /// The file.
    path: PathBuf,
    /// The key (given to the stand-in; never printed).
    value: String,
}

impl ApiKeyFile {
    fn create() -> std::io::Result<Self> {
        let value = format!("demo-{:032x}", rand::random::<u128>());
        let path = std::env::temp_dir().join(format!("elevate-sink-demo-{}.api-key", std::process::id()));
        std::fs::write(&path, format!("{value}\n"))?;
        Ok(ApiKeyFile { path, value })
    }
}

impl Drop for ApiKeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The demo's configuration: both topics, the stand-in, the Api-Key file and [`ROUTES_TOML`],
/// validated like any config file.
fn demo_config(bootstrap: &str, elevate: &str, key: &Path) -> anyhow::Result<Config> {
    let text = format!(
        "[kafka]\nbootstrap_servers = {bootstrap:?}\ngroup_id = {GROUP:?}\ntopics = [{CART_TOPIC:?}, {ORDER_TOPIC:?}]\n\
         [elevate]\nbase_url = {elevate:?}\npayment_api_key = {{ file = {:?} }}\n\
         [dead_letter]\ntopic = {DEAD_LETTER_TOPIC:?}\n\
         [pipeline]\ncommit_interval = \"100ms\"\n\
         [admin]\nlisten = \"\"\n\n{ROUTES_TOML}",
        key.display().to_string()
    );
    Config::from_toml_with_env(&text, " (demo)", Vec::<(String, String)>::new()).context("demo configuration")
}

/// The demo's topics on the mock cluster; returns its bootstrap servers.
fn mock_topics(host: &FutureProducer) -> anyhow::Result<String> {
    let mock = host
        .client()
        .mock_cluster()
        .context("the client has no mock cluster")?;
    // SAFETY: the handle is the live client that owns the mock cluster; the call only sets a
    // number on it. Without it the first group join waits a fixed ~3 s.
    unsafe {
        rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(
            rdkafka::bindings::rd_kafka_handle_mock_cluster(host.client().native_ptr()),
            50,
        );
    }
    for (topic, partitions) in TOPICS {
        mock.create_topic(topic, partitions, 1)?;
    }
    mock.create_topic(DEAD_LETTER_TOPIC, 1, 1)?;
    Ok(mock.bootstrap_servers())
}

/// What was produced: each record's origin, which example each accepted request can come from,
/// and each partition's end offset.
struct Sample {
    /// Every produced record.
    produced: Vec<Produced>,
    /// What identifies a request (see [`report::identity`]) → example file name.
    origin: BTreeMap<String, &'static str>,
    /// (topic, partition) → one past its last produced offset.
    ends: BTreeMap<Tp, i64>,
}

/// Produces every cart example to the cart topic and every order example to the order topic,
/// `ROUNDS` times; later rounds get distinct tickets.
async fn produce(host: &FutureProducer) -> anyhow::Result<Sample> {
    let mut sample = Sample {
        produced: Vec::new(),
        origin: BTreeMap::new(),
        ends: TOPICS
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |p| ((*t, p), 0)))
            .collect(),
    };
    for round in 0..ROUNDS {
        for (topic, examples) in [(CART_TOPIC, SAMPLE_EVENTS), (ORDER_TOPIC, ORDER_EVENTS)] {
            for (file, text) in examples {
                let value = retick(text, round, |id| {
                    sample.origin.insert(id.to_string(), file);
                });
                let key = format!("{file}#{round}");
                let rec: FutureRecord<'_, str, str> = FutureRecord::to(topic)
                    .key(key.as_str())
                    .payload(value.as_str())
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "example",
                        value: Some(file.as_bytes()),
                    }));
                let delivered = host
                    .send(rec, Duration::from_secs(5))
                    .await
                    .map_err(|(e, _)| e)
                    .with_context(|| format!("producing {file}"))?;
                sample.produced.push(Produced {
                    file,
                    topic,
                    partition: delivered.partition,
                    offset: delivered.offset,
                });
                let end = sample.ends.entry((topic, delivered.partition)).or_default();
                *end = (*end).max(delivered.offset + 1);
            }
        }
    }
    println!(
        "  produced  {} events, {ROUNDS} rounds with distinct tickets: the {} files of schemas/examples/ to {CART_TOPIC}, \
         the {} of schemas/examples/orders/ to {ORDER_TOPIC}",
        sample.produced.len(),
        SAMPLE_EVENTS.len(),
        ORDER_EVENTS.len()
    );
    Ok(sample)
}

/// Runs the real `pipeline::run` until the group's committed offsets reach every partition's
/// end, then stops it; returns its metrics and the committed offsets.
async fn run_until_committed(
    cfg: &Config,
    ends: &BTreeMap<Tp, i64>,
) -> anyhow::Result<(Arc<Metrics>, BTreeMap<Tp, Option<i64>>)> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(cfg.admin.wedged_after));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let run = {
        let (cfg, metrics, health) = (cfg.clone(), metrics.clone(), health.clone());
        tokio::spawn(async move { crate::pipeline::run(&cfg, metrics, health, stop_rx).await })
    };
    println!(
        "\nrunning pipeline::run until the group's committed offsets reach the end of every partition ..."
    );
    let started = Instant::now();
    let committed = wait_for_commits(&cfg.kafka.bootstrap_servers, ends).await;
    let _ = stop.send(true);
    let summary = run.await.context("pipeline task")??;
    let committed = committed?;
    println!(
        "done after {:.1} s; shut down: drained = {}, final commit ok = {}",
        started.elapsed().as_secs_f64(),
        summary.drained,
        summary.final_commit
    );
    Ok((metrics, committed))
}

/// The example's JSON with every string ticket (of its lines, or its own for a click) suffixed
/// for rounds after the first; calls `seen` with what identifies each request it can become: its
/// tickets, or for an event without any (an order) its variant keys (see [`report::identity`]).
fn retick(text: &str, round: usize, mut seen: impl FnMut(&str)) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(text) else {
        return text.to_string();
    };
    let mut ticketed = false;
    let mut tick = |t: &mut Value| {
        if let Value::String(t) = t {
            if !t.is_empty() {
                if round > 0 {
                    t.push_str(&format!("-r{}", round + 1));
                }
                ticketed = true;
                seen(t);
            }
        }
    };
    if let Some(t) = v.get_mut("ticket") {
        tick(t);
    }
    if let Some(lines) = v.get_mut("lines").and_then(|l| l.as_array_mut()) {
        for line in lines.iter_mut() {
            if let Some(t) = line.get_mut("ticket") {
                tick(t);
            }
        }
        let variants = report::variant_keys(lines);
        if !ticketed && !variants.is_empty() {
            seen(&variants);
        }
    }
    v.to_string()
}

/// Polls the group's committed offsets until every partition of both topics reaches its end.
async fn wait_for_commits(
    bootstrap: &str,
    ends: &BTreeMap<Tp, i64>,
) -> anyhow::Result<BTreeMap<Tp, Option<i64>>> {
    let checker: Arc<BaseConsumer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()?,
    );
    let deadline = Instant::now() + FINISH_TIMEOUT;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let c = checker.clone();
        let mut tpl = TopicPartitionList::new();
        for (topic, p) in ends.keys() {
            tpl.add_partition(topic, *p);
        }
        let got =
            tokio::task::spawn_blocking(move || c.committed_offsets(tpl, Duration::from_secs(2))).await?;
        let mut committed: BTreeMap<Tp, Option<i64>> = BTreeMap::new();
        if let Ok(tpl) = got {
            for &(topic, p) in ends.keys() {
                let o = match tpl.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                };
                committed.insert((topic, p), o);
            }
        }
        let done = ends
            .iter()
            .all(|(tp, end)| *end == 0 || committed.get(tp).copied().flatten().unwrap_or(0) >= *end);
        if done {
            return Ok(committed);
        }
        if Instant::now() > deadline {
            bail!("records were not all committed within {FINISH_TIMEOUT:?}: committed {committed:?}, ends {ends:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_rounds_get_distinct_tickets() {
        let mut seen = Vec::new();
        let v = retick(SAMPLE_EVENTS[1].1, 1, |t| seen.push(t.to_string()));
        assert!(v.contains("T2xpbmUtMS1lbGV2YXRlLXNlYXJjaA-r2"), "{v}");
        assert!(seen.iter().all(|t| t.ends_with("-r2")), "{seen:?}");
        let click = SAMPLE_EVENTS.iter().find(|(f, _)| *f == "click.json").unwrap().1;
        let mut seen = Vec::new();
        let v = retick(click, 1, |t| seen.push(t.to_string()));
        assert_eq!(seen, vec!["Q2xpY2tlZC1pbi1hbi1FbGV2YXRlLWxpc3Rpbmc-r2"], "{v}");
    }

    #[test]
    fn orders_are_known_by_their_variant_keys() {
        let mut seen = Vec::new();
        retick(ORDER_EVENTS[0].1, 1, |t| seen.push(t.to_string()));
        assert_eq!(seen, vec!["v-shirt-blue-m+v-socks-black"]);
    }

    #[test]
    fn the_demo_config_is_valid_and_has_a_route_per_kind_it_shows() {
        let cfg = demo_config("127.0.0.1:9", "http://127.0.0.1:9", Path::new("/tmp/k")).unwrap();
        let routes = crate::route::Routes::from_config(&cfg).unwrap();
        let kinds: Vec<&str> = routes.routes.iter().map(|r| r.tag.kind.as_str()).collect();
        assert_eq!(kinds, vec!["add-to-cart", "click", "payment"]);
        assert_eq!(ORDER_EVENTS.len(), 3, "every file of schemas/examples/orders/");
    }
}
