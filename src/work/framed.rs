//! The journey of a record on an Avro or Protobuf topic: tracked at once with one part (so the
//! partition's commit waits behind it), decoded in its own task — waiting out the registry, never
//! parked for it — then mapped by the same routes as JSON and delivered as in [`Work::take`].
//! Guarantees: a permanent wire failure parks the record with its [`WireReason`]; a revoked
//! partition's record stops waiting. Limits: its notifications count as one part in flight.

use std::sync::Arc;

use serde_json::Value;

use super::{trace_and_age, Tp, Work};
use crate::deadletter::{ParkCause, ParkReason};
use crate::kafka::SourceRecord;
use crate::ledger::{Claim, Track};
use crate::metrics::{label, route_labels};
use crate::route::RouteInvalid;
use crate::select::Mapped;
use crate::util::lock;
use crate::wire::{WireError, WireReason};

impl Work {
    /// Takes a record of a wire-format topic (see the module doc); false if not owned.
    pub(super) fn take_framed(self: &Arc<Self>, src: SourceRecord) -> bool {
        let key: Tp = (src.topic.clone(), src.partition);
        let generation = match self.track(&key, src.offset, 1) {
            Track::Tracked(generation) => generation,
            Track::AlreadyDelivered => return true,
            Track::NotOwned | Track::Redelivery => return false,
        };
        let claim = Claim {
            key,
            generation,
            offset: src.offset,
        };
        let this = self.clone();
        tokio::spawn(async move {
            if this.decode_and_deliver(&src, &claim).await {
                this.finish(&claim);
            }
        });
        true
    }

    /// Decodes, maps and delivers (or parks) one record; false when abandoned (revoked).
    async fn decode_and_deliver(&self, src: &SourceRecord, claim: &Claim<Tp>) -> bool {
        let Some(decoder) = self.sources.decoder(&src.topic) else {
            return false; // take_framed is only called for topics with a decoder
        };
        let wanted = || lock(&self.ledger).is_current(&claim.key, claim.generation);
        let value = src.value.as_deref();
        let Some(decoded) = self.sources.decode(decoder, value, &self.metrics, wanted).await else {
            return false;
        };
        let mapped = match decoded.map_err(wire_park).and_then(|v| self.map(&v, src)) {
            Ok(mapped) => mapped,
            Err(why) => {
                self.dead_letter.park(src, &why).await;
                return true;
            }
        };
        for reason in &mapped.skipped {
            self.metrics
                .skipped
                .get_or_create(&label("reason", reason.as_str()))
                .inc();
        }
        for (route, reason) in &mapped.route_skips {
            self.metrics
                .route_skipped
                .get_or_create(&route_labels(route, Some(reason.as_str())))
                .inc();
        }
        let sends = mapped.notifications.iter().map(|n| self.deliver(n, src, claim));
        futures::future::join_all(sends)
            .await
            .into_iter()
            .all(|done| done)
    }

    /// The decoded value through the routes, trace headers and the `--max-age` rule, as
    /// [`super::plan`] does.
    fn map(&self, value: &Value, src: &SourceRecord) -> Result<Mapped, ParkReason> {
        let mapped = self
            .routes
            .map_value(&src.topic, value)
            .map_err(|e| self.invalid_park(e))?;
        Ok(trace_and_age(
            mapped,
            src,
            self.max_age,
            super::clock(self.max_age),
        ))
    }

    /// A mapping failure as a park reason naming its route, counted, as [`Work::take`] parks it.
    fn invalid_park(&self, RouteInvalid { route, invalid }: RouteInvalid) -> ParkReason {
        let mut why = park(ParkCause::Invalid(invalid.reason), invalid.detail);
        why.route = route.as_ref().map(|r| r.name.to_string());
        if let Some(route) = &route {
            self.count_parked(route, &why);
        }
        why
    }
}

/// A permanent wire failure as a park reason.
fn wire_park(e: WireError) -> ParkReason {
    // `decode` returns only permanent errors; a transient one here would be a bug, parked loudly.
    let reason = e.park_reason().unwrap_or(WireReason::BadSchema);
    park(ParkCause::Wire(reason), e.to_string())
}

fn park(reason: ParkCause, detail: String) -> ParkReason {
    ParkReason {
        reason,
        detail,
        status: None,
        attempts: 0,
        line: None,
        route: None,
    }
}
