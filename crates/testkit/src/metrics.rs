//! The one reader of the service's Prometheus text (`/metrics`, `Metrics::encode`), for tests and
//! the harness. Guarantees: a sample line is `SERIES VALUE`, the value its last token; comment
//! lines and lines whose last token is not a number are ignored. Limits: no exemplars, no escapes.

use std::collections::BTreeMap;

/// The sample lines of `text` as (series with its labels, value), comments left out.
fn samples_of(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        Some((series, value.parse::<f64>().ok()?))
    })
}

/// Sum of every sample whose line starts with `needle`: a name, optionally with a label prefix
/// (`elevate_sink_consume_errors_total{code="BadMessage"`).
pub fn sum(text: &str, needle: &str) -> f64 {
    samples_of(text)
        .filter(|(series, _)| series.starts_with(needle))
        .map(|(_, v)| v)
        .sum()
}

/// The value of the series `name` without labels, if it is in `text`.
pub fn value(text: &str, name: &str) -> Option<f64> {
    samples_of(text)
        .find(|(series, _)| *series == name)
        .map(|(_, v)| v)
}

/// The labelled sample lines of `name` (`name{…} value`), e.g. the `partition="0"` lines of
/// `elevate_sink_consumer_lag`.
pub fn labelled<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .collect()
}

/// The samples of `family` summed by the value of its label `label` (samples without it are left out).
pub fn by_label(text: &str, family: &str, label: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{family}{{");
    let key = format!("{label}=\"");
    let mut out = BTreeMap::new();
    for (series, v) in samples_of(text).filter(|(s, _)| s.starts_with(&prefix)) {
        let Some(rest) = series.split(&key).nth(1) else {
            continue;
        };
        let name = rest.split('"').next().unwrap_or_default().to_string();
        *out.entry(name).or_default() += v;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP elevate_sink_skipped_total Skipped.\n\
        # TYPE elevate_sink_skipped_total counter\n\
        elevate_sink_skipped_total{reason=\"no_ticket\"} 2\n\
        elevate_sink_skipped_total{reason=\"not_from_elevate\"} 3\n\
        elevate_sink_skipped_total{reason=\"no_ticket\",x=\"y\"} 1\n\
        elevate_sink_assigned_partitions 4\n\
        elevate_sink_assigned_partitions_max 9\n";

    #[test]
    fn sums_by_prefix_reads_plain_values_and_groups_by_label() {
        assert_eq!(sum(TEXT, "elevate_sink_skipped_total"), 6.0);
        assert_eq!(sum(TEXT, "elevate_sink_skipped_total{reason=\"no_ticket\""), 3.0);
        assert_eq!(value(TEXT, "elevate_sink_assigned_partitions"), Some(4.0));
        assert_eq!(value(TEXT, "elevate_sink_missing"), None);
        assert_eq!(labelled(TEXT, "elevate_sink_skipped_total").len(), 3);
        let by = by_label(TEXT, "elevate_sink_skipped_total", "reason");
        assert_eq!(by.get("no_ticket"), Some(&3.0));
        assert_eq!(by.get("not_from_elevate"), Some(&3.0));
    }
}
