//! The report: `latest.md`'s table from `latest.json`'s figures. Guarantees: pure, and a missing
//! figure shows as NaN or null rather than failing the run.

use serde_json::Value;

pub fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The run, the machine and its load, the main topic.
fn header(r: &Value) -> String {
    let m = &r["machine"];
    format!(
        "Run {} at commit `{}` ({} mode): {} CPUs ({}), {} GiB, load average at start {} / at end {}.\n\
         Topic: {} records in {} partitions, {} notifications expected, {:.0} MiB of values.\n\n",
        r["when"].as_str().unwrap_or(""),
        r["commit"].as_str().unwrap_or(""),
        r["mode"].as_str().unwrap_or(""),
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or(""),
        m["memory_gib"],
        m["loadavg_at_start"].as_str().unwrap_or(""),
        m["loadavg_at_end"].as_str().unwrap_or(""),
        r["topic"]["records"],
        r["topic"]["partitions"],
        r["topic"]["notifications"],
        f(&r["topic"]["value_mib"]),
    ) + &placement(&m["placement"])
}

/// The placement line (`--sink-cpus`, `--others-cpus`), or nothing when every process could run
/// on any CPU.
fn placement(p: &Value) -> String {
    if p.is_null() {
        return String::new();
    }
    format!(
        "Placement: the sink and the load generator on CPUs {}, the stand-in and the broker on CPUs {}.\n\n",
        p["sink_and_load_generator"].as_str().unwrap_or("any"),
        p["standin_and_broker"].as_str().unwrap_or("any"),
    )
}

/// A target's status from its `met` figure.
fn ok(met: &Value) -> &'static str {
    if met.as_bool() == Some(true) {
        "met"
    } else {
        "**missed**"
    }
}

/// `latest.md`: the header, the table of the phases, the workloads and the footer.
pub fn markdown(r: &Value) -> String {
    let mut s = header(r);
    s += "| measure | result | target | status |\n|---|---|---|---|\n";
    s += &ceiling_rows(r);
    s += &sink_rows(r);
    s += &steady_rows(r);
    s += &remote_rows(r);
    s += &workload_table(r);
    s += &footer(r);
    s
}

/// Phases 1 and 2: the consume ceiling and the HTTP ceilings.
fn ceiling_rows(r: &Value) -> String {
    let cc = &r["consume_ceiling"];
    let hc = &r["http_ceiling"];
    let sc = &r["consume_map_ceiling"];
    let mut s = format!(
        "| 1. consume ceiling (bare BaseConsumer, service settings) | {:.0} records/s = {:.0} notifications/s equivalent, {:.2} µs CPU per record ({:.2} kernel) | | |\n",
        f(&cc["records_per_s"]),
        f(&cc["notifications_equiv_per_s"]),
        f(&cc["cpu_us_per_record"]),
        f(&cc["kernel_us_per_record"])
    );
    s += &format!(
        "| 1b. … the service's consume path and routes, nothing sent (diagnostic: StreamConsumer in a group) | {:.0} records/s, {:.2} µs CPU per record, {:.2} per notification ({:.2} kernel) | | |\n",
        f(&sc["records_per_s"]),
        f(&sc["cpu_us_per_record"]),
        f(&sc["cpu_us_per_notification"]),
        f(&sc["kernel_us_per_notification"])
    );
    let hb = &hc["bracket"];
    s += &format!(
        "| 2. HTTP ceiling (stand-in, our load generator; {} before phase 3, {:.0}/s right after its first run) | {:.0} requests/s (the mean of the best run and the one after), load generator {:.1} µs CPU per request ({:.1} before, {:.1} after) | | |\n",
        hc["runs"]
            .as_array()
            .map(|a| a
                .iter()
                .map(|x| format!("{} conns: {:.0}/s", x["connections"], f(&x["requests_per_s"])))
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        f(&hb["after"]["requests_per_s"]),
        f(&hb["requests_per_s"]),
        f(&hb["cpu_us_per_request"]),
        f(&hb["before"]["cpu_us_per_request"]),
        f(&hb["after"]["cpu_us_per_request"]),
    );
    if let Some(rq) = hc.get("reqwest") {
        s += &format!(
            "| 2. … for reference, an ordinary reqwest client (same requests, {} conns) | {:.0} requests/s, {:.1} µs CPU per request | | |\n",
            rq["connections"],
            f(&rq["requests_per_s"]),
            f(&rq["cpu_us_per_request"]),
        );
    }
    s
}

/// Phase 3 on the main topic: throughput, both ratios, peak RSS.
fn sink_rows(r: &Value) -> String {
    let e = &r["e2e"];
    let hb = &r["http_ceiling"]["bracket"];
    let tg = &r["targets"];
    let mut s = format!(
        "| 3. end to end, unthrottled ({} records) | {:.0} records/s, {:.0} notifications/s ({:.0} records/s to committed end) | | |\n",
        e["records"],
        f(&e["records_per_s"]),
        f(&e["notifications_per_s"]),
        f(&e["records_per_s_to_committed_end"])
    );
    s += &format!(
        "| 3. … ÷ lower ceiling ({:.0}/s, {}) | {:.2} | ≥ 0.80 | {} |\n",
        f(&r["lower_ceiling"]["per_s"]),
        r["lower_ceiling"]["which"].as_str().unwrap_or(""),
        f(&tg["e2e_ratio"]["value"]),
        ok(&tg["e2e_ratio"]["met"])
    );
    let sink_cpu = cpu_of(e, "notification");
    s += &format!(
        "| 3. … sink CPU per notification ÷ load generator CPU per request (of which kernel) | {sink_cpu} ÷ {} = {:.2} | ≤ 1.5 | {} |\n",
        cpu_of(hb, "request"),
        f(&tg["cpu_ratio"]["value"]),
        ok(&tg["cpu_ratio"]["met"])
    );
    if let Some(p) = hb.get("paced").filter(|p| !p.is_null()) {
        s += &format!(
            "| 3. … the load generator paced at the sink's rate ({:.0}/s; the stand-in as idle as behind the sink) | {sink_cpu} ÷ {} = {:.2} | | |\n",
            f(&p["requests_per_s"]),
            cpu_of(p, "request"),
            f(&e["cpu_us_per_notification"]) / f(&p["cpu_us_per_request"]),
        );
    }
    s += &format!(
        "| 3. peak RSS (VmHWM), every workload below | {:.1} MiB at most | < 64 MiB, flat | {} |\n",
        tg["peak_rss"]["value_mib"]
            .as_array()
            .map_or(f64::NAN, |a| a.iter().map(f).fold(0.0, f64::max)),
        ok(&tg["peak_rss"]["met"])
    );
    s
}

/// Phases 4 and 5: the throttle and the latencies.
fn steady_rows(r: &Value) -> String {
    let (e, t, l) = (&r["e2e"], &r["throttled"], &r["latency"]);
    let mut s = format!(
        "| 4. throttled at {:.0}/s over {:.0} s | {:.1}/s, error {:+.2} % ({:+.2} % incl. the first-second burst) | ±1 % | {} |\n",
        f(&t["set_rps"]),
        f(&t["window_s"]),
        f(&t["observed_rps"]),
        f(&t["error_pct"]),
        f(&t["error_pct_incl_burst"]),
        ok(&r["targets"]["throttled_error"]["met"])
    );
    s += &format!(
        "| 5. produce-to-204 latency at {:.0} records/s (steady) | p50 {} ms, p99 {} ms (max {} ms) | | |\n",
        f(&l["records_per_s"]),
        l["p50_ms"],
        l["p99_ms"],
        l["max_ms"]
    );
    s += &format!(
        "| 5. … on the preloaded topic (queueing, not latency) | p50 {} ms, p99 {} ms | | |\n",
        e["queueing_latency_ms"]["p50"], e["queueing_latency_ms"]["p99"]
    );
    s
}

/// The cores each process used in the main unthrottled run, and the sink's tuning.
/// `cpu_us_per_{per}` of `v` with its kernel part (`kernel_us_per_{per}`) in brackets:
/// `18.0 µs (7.3)`.
fn cpu_of(v: &Value, per: &str) -> String {
    let at = |k: &str| f(&v[format!("{k}_us_per_{per}").as_str()]);
    format!("{:.1} µs ({:.1})", at("cpu"), at("kernel"))
}

fn footer(r: &Value) -> String {
    let (m, e) = (&r["machine"], &r["e2e"]);
    let mut s = String::new();
    s += &format!(
        "\nCores used during the unthrottled run (of {}): {}.\n",
        m["cpus"],
        e["cores_used"]
            .as_object()
            .map(|o| o
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    s += &format!(
        "Sink tuning: {}.\n",
        r["config"]["summary"].as_str().unwrap_or("")
    );
    s
}

/// Phase 6's rows: one per in-flight setting.
fn remote_rows(r: &Value) -> String {
    let ok = r["targets"]["remote_ratio"]["met"].as_bool() == Some(true);
    let mut s = String::new();
    for x in r["remote"].as_array().into_iter().flatten() {
        s += &format!(
            "| 6. Elevate answering after {} ms, {} requests in flight | {:.0} notifications/s = {:.2} × {:.0}/s (in flight ÷ latency), {:.1} µs CPU per notification | ≥ 0.9 | {} |\n",
            x["latency_ms"],
            x["max_in_flight_requests"],
            f(&x["notifications_per_s"]),
            f(&x["ratio"]),
            f(&x["in_flight_over_latency"]),
            f(&x["cpu_us_per_notification"]),
            if ok { "met" } else { "**missed**" }
        );
    }
    s
}

/// Phase 3 on every workload: shape, size, throughput, CPU and peak RSS.
fn workload_table(r: &Value) -> String {
    let mut s = String::from(
        "\n| workload (phase 3) | records | bytes per record | notifications | notifications/s | sink CPU per notification | peak RSS |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for x in r["workloads"].as_array().into_iter().flatten() {
        let w = &x["workload"];
        s += &format!(
            "| {} ({}) | {} | {:.0} | {} | {:.0} | {:.1} µs | {:.1} MiB |\n",
            w["shape"].as_str().unwrap_or(""),
            w["size"].as_str().unwrap_or(""),
            w["records"],
            f(&w["mean_value_bytes"]),
            w["notifications"],
            f(&x["notifications_per_s"]),
            f(&x["cpu_us_per_notification"]),
            f(&x["peak_rss_mib"])
        );
    }
    s
}
