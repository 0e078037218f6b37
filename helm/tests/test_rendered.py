"""Checks over the rendered manifests that helm-unittest cannot express: the config file parsed as
TOML, values read the way real helm reads them, and properties that hold for every pod."""
import json
import re
import subprocess
import tomllib

import pytest

from conftest import ALL_FEATURES, CHART, HERE, REPO, by_kind, helm_template, render

# The keys the service accepts (unknown keys are errors in the service). `routes` is an array of
# tables: its set is the keys of one entry.
ROUTE_KEYS = {"name", "kind", "topics", "event_types", "mapping", "requests_per_second"}
ROUTE_KINDS = {"add-to-cart", "click", "add-favorite", "remove-favorite", "end", "payment"}
CONFIG_KEYS = {
    "kafka": {"bootstrap_servers", "group_id", "topics", "properties", "secret_properties",
              "value_format", "value_format_per_topic"},
    "registry": {"url", "username", "password", "token", "ca_file", "connect_timeout",
                 "request_timeout"},
    "elevate": {"cluster_id", "base_url", "host", "connect_timeout", "request_timeout",
                "max_in_flight_requests", "forward_visitor_headers", "forward_ip_for",
                "user_agent", "skip_bots", "bot_patterns", "payment_api_key"},
    "mapping": None,  # free-form JSON Pointers, passed through
    "routes": ROUTE_KEYS,
    "rate": {"requests_per_second", "burst", "share_by_partitions", "markets"},
    "retry": {"initial_backoff", "max_backoff", "max_attempts", "max_elapsed", "max_retry_after"},
    "dead_letter": {"topic", "properties"},
    "pipeline": {"max_in_flight_records", "max_pending_notifications", "commit_interval",
                 "commit_metadata_max_bytes", "worker_threads"},
    "shutdown": {"drain_deadline", "grace_period"},
    "admin": {"listen", "wedged_after"},
    "log": {"format", "level"},
}
INTEGER_KEYS = {
    ("elevate", "max_in_flight_requests"), ("rate", "burst"), ("retry", "max_attempts"),
    ("pipeline", "max_in_flight_records"), ("pipeline", "max_pending_notifications"),
    ("pipeline", "commit_metadata_max_bytes"), ("pipeline", "worker_threads"),
}


def config_of(docs):
    (cm,) = by_kind(docs, "ConfigMap")
    return tomllib.loads(cm["data"]["config.toml"])


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield d["kind"], d["spec"]["template"]["spec"]


def test_config_parses_as_toml_with_only_known_keys(docs):
    cfg = config_of(docs)
    assert set(cfg) <= set(CONFIG_KEYS), set(cfg) - set(CONFIG_KEYS)
    for section, keys in cfg.items():
        if section == "routes":
            for route in keys:
                assert set(route) <= ROUTE_KEYS, set(route) - ROUTE_KEYS
                assert {"name", "kind"} <= set(route) and route["kind"] in ROUTE_KINDS, route
        elif CONFIG_KEYS[section] is not None:
            assert set(keys) <= CONFIG_KEYS[section], (section, set(keys) - CONFIG_KEYS[section])
    for section, key in INTEGER_KEYS:
        assert type(cfg[section][key]) is int, (section, key, cfg[section][key])
    assert cfg["kafka"]["topics"] and cfg["kafka"]["group_id"]


def test_chart_owned_keys(default_docs, all_docs):
    cfg = config_of(default_docs)
    assert cfg["shutdown"] == {"drain_deadline": "20s", "grace_period": "30s"}
    assert cfg["admin"] == {"listen": "0.0.0.0:9090"}
    cfg = config_of(all_docs)
    assert cfg["shutdown"] == {"drain_deadline": "30s", "grace_period": "45s"}
    assert cfg["admin"] == {"listen": "0.0.0.0:9464"}
    (dep,) = by_kind(all_docs, "Deployment")
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 45


def test_grace_period_exceeds_drain_deadline_everywhere(docs):
    cfg = config_of(docs)
    drain = int(cfg["shutdown"]["drain_deadline"].rstrip("s"))
    for kind, spec in pod_specs(docs):
        assert spec["terminationGracePeriodSeconds"] > drain, kind


def test_drain_deadline_longer_than_grace_period_fails():
    proc = helm_template("-f", str(HERE / "values" / "bad-drain-deadline.yaml"), check=False)
    assert proc.returncode != 0
    assert "drainDeadlineSeconds (45) must be smaller than terminationGracePeriodSeconds (30)" in proc.stderr


def test_all_features_config_sections(all_docs):
    cfg = config_of(all_docs)
    assert cfg["kafka"]["properties"]["security.protocol"] == "SASL_SSL"
    assert cfg["kafka"]["secret_properties"] == {
        "sasl.password": {"file": "/var/run/secrets/elevate-sink/kafka-sasl-password"}}
    assert cfg["rate"]["markets"] == {"SE": 40, "NO": 20}
    assert cfg["elevate"]["cluster_id"] == "w12345"
    assert cfg["elevate"]["payment_api_key"] == {
        "file": "/var/run/secrets/elevate-sink/elevate-payment-api-key"}
    assert [(r["name"], r["kind"]) for r in cfg["routes"]] == [
        ("cart", "add-to-cart"), ("clicks", "click"), ("favourites", "add-favorite"),
        ("payments", "payment")]
    payments = cfg["routes"][3]
    assert payments["mapping"] == {"lines": "/orderLines"} and payments["requests_per_second"] == 5
    assert "topics" not in cfg["routes"][2], "an empty list is not rendered (every topic feeds it)"


def test_default_config_has_no_routes(default_docs):
    """No routes: the service's legacy single add-to-cart route over every topic."""
    cfg = config_of(default_docs)
    assert "routes" not in cfg and "payment_api_key" not in cfg["elevate"]


def test_no_secret_values_in_configmap(docs):
    cfg = config_of(docs)
    for key, value in cfg["kafka"].get("properties", {}).items():
        assert "password" not in key and "secret" not in key, key
    for value in cfg["kafka"].get("secret_properties", {}).values():
        assert set(value) in ({"file"}, {"env"}), value
    if "payment_api_key" in cfg["elevate"]:
        assert set(cfg["elevate"]["payment_api_key"]) in ({"file"}, {"env"})


def test_every_pod_is_hardened(docs):
    specs = list(pod_specs(docs))
    assert specs
    for kind, spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532, kind
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", kind
        assert spec["automountServiceAccountToken"] is False, kind
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532, kind
            assert sc["readOnlyRootFilesystem"] is True, kind
            assert sc["allowPrivilegeEscalation"] is False, kind
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], kind
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", kind
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            assert mounts["/etc/elevate-sink"]["readOnly"] is True
            if "/var/run/secrets/elevate-sink" in mounts:
                assert mounts["/var/run/secrets/elevate-sink"]["readOnly"] is True


def test_service_account_token_not_automounted(docs):
    (sa,) = by_kind(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False


def test_config_change_rolls_pods():
    def checksum(*args):
        (dep,) = by_kind(render(*args), "Deployment")
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() == checksum()
    assert checksum() != checksum("--set", "config.log.level=debug")
    assert checksum() != checksum("--set", "drainDeadlineSeconds=10")


def test_keda_never_above_partitions(all_docs):
    (so,) = by_kind(all_docs, "ScaledObject")
    assert so["spec"]["maxReplicaCount"] <= 12  # keda.partitionCount in all-features-values.yaml
    meta = so["spec"]["triggers"][0]["metadata"]
    assert meta["consumerGroup"] == "elevate-sink-prod"
    assert meta["topic"] == "cart-events"
    assert meta["allowIdleConsumers"] == "false"
    (dep,) = by_kind(all_docs, "Deployment")
    assert "replicas" not in dep["spec"], "KEDA owns the replica count"
    proc = helm_template("-f", str(ALL_FEATURES), "--set", "keda.maxReplicaCount=13", check=False)
    assert proc.returncode != 0
    assert "keda.maxReplicaCount (13) must not exceed keda.partitionCount (12)" in proc.stderr


def test_replay_job_name_follows_its_spec():
    def job_name(*args):
        (job,) = by_kind(render("-f", str(ALL_FEATURES), *args), "Job")
        return job["metadata"]["name"]

    assert job_name() == job_name()
    assert job_name() != job_name("--set", "replay.to=now")
    assert job_name() != job_name("--set", "replay.dryRun=false")
    assert len(job_name()) <= 63


def test_networkpolicy_egress_only_kafka_elevate_dns(all_docs):
    (np,) = by_kind(all_docs, "NetworkPolicy")
    ports = [sorted((p["port"], p["protocol"]) for p in rule["ports"]) for rule in np["spec"]["egress"]]
    assert ports == [[(53, "TCP"), (53, "UDP")], [(9093, "TCP")], [(443, "TCP")]]


def test_unquoted_no_market_code_fails():
    proc = helm_template("-f", str(HERE / "values" / "unquoted-no-market.yaml"), check=False)
    assert proc.returncode != 0 and "Quote the market code" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--set", "replicas=2"], "additional properties 'replicas' not allowed"),
    (["--set", "replicaCount=two"], "replicaCount"),
    (["--set", "terminationGracePeriodSeconds=thirty"], "terminationGracePeriodSeconds"),
    (["--set", "config.log.format=xml"], "format"),
    (["--set", "config.kafka.bogus=1"], "bogus"),
    (["--set", "keda.enabled=maybe"], "keda"),
    (["--set", "config.routes[0].name=r", "--set", "config.routes[0].kind=purchase"],
     "at '/config/routes/0/kind': value must be one of"),
    (["--set", "config.routes[0].kind=click"], "missing property 'name'"),
    (["--set", "config.elevate.payment_api_key=hunter2"], "payment_api_key"),
])
def test_schema_rejects(args, message):
    proc = helm_template(*args, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_owned_keys_merge_with_the_rest_of_their_section():
    cfg = config_of(render("--set", "config.admin.wedged_after=1m"))
    assert cfg["admin"] == {"listen": "0.0.0.0:9090", "wedged_after": "1m"}
    proc = helm_template("--set", "config.admin.listen=0.0.0.0:1", check=False)
    assert proc.returncode != 0 and "config.admin.listen is owned by the chart" in proc.stderr


def reference_rows(markdown, heading):
    """{key: row} of one section's table in the service's generated reference (`--print-reference`)."""
    section = markdown.split(f"## `{heading}`", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([a-z_]+)` \| (.*)$", section, re.M))


def test_schema_and_key_list_match_the_service_defaults():
    """The config keys the chart knows (schema, CONFIG_KEYS) are the ones the service prints, with
    the keys --print-defaults leaves out (optional ones without a default, the `[[routes]]` entry's)
    taken from its --print-reference."""
    binary = next((p for p in (REPO / "target" / "release" / "elevate-sink",
                               REPO / "target" / "debug" / "elevate-sink") if p.exists()), None)
    if binary is None:
        pytest.skip("target/{release,debug}/elevate-sink not built")
    proc = subprocess.run([str(binary), "check", "--print-defaults"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"{binary} check --print-defaults is not available: {proc.stderr.strip()[:200]}")
    defaults = tomllib.loads(proc.stdout)
    ref = subprocess.run([str(binary), "check", "--print-reference"], capture_output=True, text=True,
                         check=True).stdout
    assert defaults.pop("routes") == []
    service = {s: set(keys) for s, keys in defaults.items() if s != "mapping"}
    service["elevate"] |= set(reference_rows(ref, "[elevate]"))  # cluster_id, base_url, payment_api_key
    service["registry"] |= set(reference_rows(ref, "[registry]"))  # url, username, password, token, ca_file
    routes = reference_rows(ref, "[[routes]]")
    service["routes"] = set(routes)
    assert service["routes"], "no [[routes]] table in --print-reference"
    ours = {s: keys for s, keys in CONFIG_KEYS.items() if keys is not None}
    assert ours == service
    full = json.loads((CHART / "values.schema.json").read_text())
    schema = full["properties"]["config"]["properties"]
    in_schema = {s: set(v.get("properties", {})) for s, v in schema.items()
                 if s not in ("mapping", "routes")}
    assert schema["routes"]["items"] == {"$ref": "#/definitions/route"}
    route_schema = full["definitions"]["route"]
    in_schema["routes"] = set(route_schema["properties"])
    assert in_schema == service
    kind_type = routes["kind"].split(" | (none) |")[0]
    assert set(re.findall(r'"([a-z-]+)"', kind_type)) == ROUTE_KINDS == set(route_schema["properties"]["kind"]["enum"])
    assert set(route_schema["required"]) == {k for k, row in routes.items() if "Required" in row}
