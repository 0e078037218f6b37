//! The journey of a record on an Avro or Protobuf topic. Its schema cached: decoded on the spot
//! ([`Work::decode_now`]) and on as a JSON record, one part per notification. Its schema to
//! fetch (or the registry unavailable): tracked at once with one part (so the partition's commit
//! waits behind it), decoded in its own task — waiting out the registry, never parked for it —
//! then mapped by the same routes, its one part grown to one per notification, and sent as a JSON
//! record's are. Guarantees: a permanent wire failure parks the record with its [`WireReason`]; a
//! revoked partition's record stops waiting. Limits: a record that waits for its schema counts as
//! one notification until it is decoded, so the loop may take up to
//! `pipeline.max_in_flight_records` of them before their lines count against
//! `pipeline.max_pending_notifications`.

use std::sync::Arc;

use futures::FutureExt;
use serde_json::Value;

use super::{trace_and_age, Tp, Unsendable, Work};
use crate::deadletter::{ParkCause, ParkReason};
use crate::kafka::SourceRecord;
use crate::ledger::Claim;
use crate::select::Mapped;
use crate::util::lock;
use crate::wire::{Decoder, WireError, WireReason};

impl Work {
    /// Takes a record of a wire-format topic that waits for its schema (see the module doc);
    /// false if not owned.
    pub(super) fn take_framed(self: &Arc<Self>, key: Tp, src: SourceRecord) -> bool {
        let claim = match self.claim(key, src.offset, 1) {
            Ok(claim) => Arc::new(claim),
            Err(taken) => return taken,
        };
        let this = self.clone();
        tokio::spawn(async move {
            let src = Arc::new(src);
            if this.decode_and_send(&src, &claim).await {
                this.finish(&claim);
            }
        });
        true
    }

    /// The record decoded and mapped now, when its schema is cached: the decode is then ready
    /// on its first poll (no registry round trip). None when it has to wait (a fetch, or the
    /// registry unavailable); a permanent wire failure is returned to park.
    pub(super) fn decode_now(
        &self,
        decoder: &Decoder,
        src: &SourceRecord,
    ) -> Option<Result<Mapped, Unsendable>> {
        match decoder
            .decode(src.value.as_deref().unwrap_or_default())
            .now_or_never()?
        {
            Ok(value) => Some(self.map(&value, src)),
            Err(e) if e.is_transient() => None,
            Err(e) => Some(Err(wire_park(e))),
        }
    }

    /// Decodes and maps one record, then parks it, or hands its notifications to
    /// [`Work::send_all`] with its one part grown to one per notification. True when the caller
    /// completes the claim's one part (parked, or nothing to send); false when they complete it,
    /// or when it was abandoned (revoked).
    async fn decode_and_send(self: &Arc<Self>, src: &Arc<SourceRecord>, claim: &Arc<Claim<Tp>>) -> bool {
        let Some(decoder) = self.sources.decoder(&src.topic) else {
            return false; // take_framed is only called for topics with a decoder
        };
        let wanted = || claim.is_current();
        let value = src.value.as_deref();
        let Some(decoded) = self.sources.decode(decoder, value, &self.metrics, wanted).await else {
            return false;
        };
        let mapped = match decoded.map_err(wire_park).and_then(|v| self.map(&v, src)) {
            Ok(mapped) => mapped,
            Err(u) => {
                u.count(self);
                self.dead_letter.park(src, &u.why).await;
                return true;
            }
        };
        self.count_skips(&mapped);
        let Some(more) = mapped.notifications.len().checked_sub(1) else {
            return true;
        };
        if !lock(&self.ledger).add_parts(claim, more as u32) {
            return false; // revoked while it was decoded
        }
        self.send_all(mapped.notifications, src.clone(), claim.clone());
        false
    }

    /// The decoded value through the routes, trace headers and the `--max-age` rule, as
    /// [`super::plan`] does.
    fn map(&self, value: &Value, src: &SourceRecord) -> Result<Mapped, Unsendable> {
        let mapped = self.routes.map_value(&src.topic, value)?;
        Ok(trace_and_age(
            mapped,
            src,
            self.max_age,
            super::clock(self.max_age),
        ))
    }
}

/// A permanent wire failure as a record to park (no route: it was never mapped).
fn wire_park(e: WireError) -> Unsendable {
    // `decode` returns only permanent errors; a transient one here would be a bug, parked loudly.
    let reason = e.park_reason().unwrap_or(WireReason::BadSchema);
    Unsendable {
        why: ParkReason {
            reason: ParkCause::Wire(reason),
            detail: e.to_string(),
            status: None,
            attempts: 0,
            line: None,
            route: None,
        },
        route: None,
    }
}
