//! Routes: which topics and event types feed which Elevate notification kind, and how one record
//! becomes the notifications of every route it feeds. Pure, no I/O. Guarantees: a config without
//! `[[routes]]` is one route named `add-to-cart` of kind `add-to-cart`, fed by every topic under
//! `[mapping]`, mapping exactly as before; every kind goes through the same consent rules; a
//! record that breaks any route's contract is invalid as a whole, naming the route and the field.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Config, ConfigError, MappingConfig};
use crate::decode::{decode_typed, event_type, parse_kept, parse_slots, require_object, Doc, Invalid, Keep};
use crate::select::{select, Mapped, SkipReason};

pub mod bots;
pub mod payload;
pub mod quota;
pub mod trace;

/// Name of the route a config without `[[routes]]` has.
pub const DEFAULT_ROUTE: &str = "add-to-cart";

/// The Elevate notification a route sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `add-to-cart`: `{"ticket"}` per Elevate cart line.
    #[default]
    AddToCart,
    /// `click`: `{"ticket"}` of a product clicked in an Elevate listing.
    Click,
    /// `add-favorite`: exactly one of `{"productKey"}` / `{"variantKey"}`.
    AddFavorite,
    /// `remove-favorite`: exactly one of `{"productKey"}` / `{"variantKey"}`.
    RemoveFavorite,
    /// `end`: no body; ends the session.
    End,
    /// The Admin API payment call: `{"lines": [..]}` from an order event, with `Api-Key`.
    Payment,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 6] = [
        Kind::AddToCart,
        Kind::Click,
        Kind::AddFavorite,
        Kind::RemoveFavorite,
        Kind::End,
        Kind::Payment,
    ];

    /// The kind's name (config value and metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AddToCart => "add-to-cart",
            Kind::Click => "click",
            Kind::AddFavorite => "add-favorite",
            Kind::RemoveFavorite => "remove-favorite",
            Kind::End => "end",
            Kind::Payment => "payment",
        }
    }

    /// The request path relative to the base URL (no leading `/`, so a base path prefix stays).
    pub fn path(self) -> &'static str {
        match self {
            Kind::AddToCart => "api/storefront/v3/notifications/add-to-cart",
            Kind::Click => "api/storefront/v3/notifications/click",
            Kind::AddFavorite => "api/storefront/v3/notifications/add-favorite",
            Kind::RemoveFavorite => "api/storefront/v3/notifications/remove-favorite",
            Kind::End => "api/storefront/v3/notifications/end",
            Kind::Payment => "api/admin/v4/notifications/payment",
        }
    }

    /// Event types that feed a route of this kind when it names none (add-to-cart: `[mapping]
    /// add_to_cart_types`).
    pub fn default_event_types(self) -> &'static [&'static str] {
        match self {
            Kind::AddToCart => &[],
            Kind::Click => &["click"],
            Kind::AddFavorite => &["add_favorite"],
            Kind::RemoveFavorite => &["remove_favorite"],
            Kind::End => &["session_end", "logout"],
            Kind::Payment => &["order_placed"],
        }
    }

    /// `[mapping]` keys this kind reads differently by default (before the route's own
    /// `mapping`): a click event is itself the one "line", carrying the ticket at `/ticket`.
    fn mapping_defaults(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Click => &[("lines", ""), ("line_source", "")],
            _ => &[],
        }
    }
}

/// Which route a notification (or a skip) belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTag {
    /// The route's name (`elevate-sink-route` header, `route` label).
    pub name: Arc<str>,
    /// Its kind.
    pub kind: Kind,
}

impl Default for RouteTag {
    /// The route of a config without `[[routes]]`.
    fn default() -> Self {
        RouteTag {
            name: DEFAULT_ROUTE.into(),
            kind: Kind::AddToCart,
        }
    }
}

/// One `[[routes]]` entry as configured.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name: the `elevate-sink-route` header and the `route` metric label.
    pub name: String,
    /// The notification it sends.
    pub kind: Kind,
    /// Topics that feed it (each one of `kafka.topics`); empty: every topic.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Event types (at the mapping's `event_type`) that feed it; empty: the kind's defaults.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// `[mapping]` keys overridden for this route (JSON Pointers), on top of `[mapping]`.
    #[serde(default)]
    pub mapping: toml::Table,
    /// This route's own quota (requests per second, this replica), on top of `[rate]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
}

/// A route resolved from config.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name and kind.
    pub tag: RouteTag,
    /// Topics that feed it.
    pub topics: Vec<String>,
    /// Where its fields live; `add_to_cart_types` holds the event types that feed it.
    pub mapping: MappingConfig,
    /// Its own quota, if any.
    pub requests_per_second: Option<f64>,
}

/// Every route, plus the bot filter they share.
#[derive(Debug, Clone)]
pub struct Routes {
    /// In config order.
    pub routes: Vec<Route>,
    /// Known-bot User-Agents to skip (`elevate.skip_bots`), None when off.
    bots: Option<Arc<bots::Bots>>,
    /// Each topic's routes and what the parser keeps of its records (what those routes'
    /// mappings read): resolved once, so a record costs one topic lookup and no list of its own.
    topics: Vec<TopicRoutes>,
    /// Every route (indexes into `routes`) and what they together read (`map_any`; and the
    /// keep-list of a topic not configured, which feeds no route).
    any: TopicRoutes,
}

/// The routes one topic feeds (indexes into [`Routes::routes`], in config order) and what the
/// parser keeps of its records.
#[derive(Debug, Clone)]
struct TopicRoutes {
    topic: String,
    routes: Vec<usize>,
    keep: Keep,
}

impl Routes {
    /// The routes `cfg` says (see the module doc for a config without `[[routes]]`).
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigError> {
        let routes = if cfg.routes.is_empty() {
            vec![Route {
                tag: RouteTag::default(),
                topics: cfg.kafka.topics.clone(),
                mapping: cfg.mapping.clone(),
                requests_per_second: None,
            }]
        } else {
            let mut out: Vec<Route> = Vec::new();
            for (i, rc) in cfg.routes.iter().enumerate() {
                let route = resolve(cfg, i, rc)?;
                if out.iter().any(|r| r.tag.name == route.tag.name) {
                    return Err(ConfigError::invalid(
                        &format!("routes[{i}].name"),
                        format!("{:?} is used by another route", rc.name),
                    ));
                }
                out.push(route);
            }
            out
        };
        for topic in &cfg.kafka.topics {
            if !routes.iter().any(|r| r.topics.contains(topic)) {
                return Err(ConfigError::invalid(
                    "routes",
                    format!("kafka.topics has {topic:?}, which feeds no route"),
                ));
            }
        }
        if routes.iter().any(|r| r.tag.kind == Kind::Payment) && cfg.elevate.payment_api_key.is_none() {
            return Err(ConfigError::invalid(
                "elevate.payment_api_key",
                "is required by a payment route ({ file = \"..\" } or { env = \"..\" })",
            ));
        }
        let of = |topic: &str, fed: Vec<usize>| TopicRoutes {
            topic: topic.to_string(),
            keep: Keep::of(fed.iter().map(|i| &routes[*i].mapping)),
            routes: fed,
        };
        let topics = cfg
            .kafka
            .topics
            .iter()
            .map(|t| {
                of(
                    t,
                    (0..routes.len())
                        .filter(|i| routes[*i].topics.contains(t))
                        .collect(),
                )
            })
            .collect();
        Ok(Routes {
            topics,
            any: of("", (0..routes.len()).collect()),
            routes,
            bots: bots::Bots::from_config(&cfg.elevate)?.map(Arc::new),
        })
    }

    /// Every route's name and kind.
    pub fn tags(&self) -> impl Iterator<Item = &RouteTag> {
        self.routes.iter().map(|r| &r.tag)
    }

    /// The routes `topic` feeds, in config order.
    pub fn for_topic<'a>(&'a self, topic: &str) -> impl Iterator<Item = &'a Route> + 'a {
        self.routes_of(self.topic(topic).0)
    }

    /// Decodes a record of `topic` and maps it for every route it feeds: their notifications
    /// together (the record is done when all are), skips labelled by route. An invalid record
    /// names the route at fault (when the value got that far).
    pub fn map(&self, topic: &str, value: Option<&[u8]>) -> Result<Mapped, RouteInvalid> {
        let (fed, keep) = self.topic(topic);
        self.map_for(fed, keep, value)
    }

    /// As [`Routes::map`], trying every route whatever its topics (`check --sample`).
    pub fn map_any(&self, value: Option<&[u8]>) -> Result<Mapped, RouteInvalid> {
        self.map_for(&self.any.routes, &self.any.keep, value)
    }

    /// As [`Routes::map`], for a value already decoded (an Avro or Protobuf record as JSON).
    pub fn map_value(&self, topic: &str, root: &Value) -> Result<Mapped, RouteInvalid> {
        self.map_root(self.topic(topic).0, root)
    }

    /// The routes `topic` feeds and what its records are parsed for; a topic not configured
    /// feeds none, and its records are parsed for what every route reads.
    fn topic(&self, topic: &str) -> (&[usize], &Keep) {
        match self.topics.iter().find(|t| t.topic == topic) {
            Some(t) => (&t.routes, &t.keep),
            None => (&[], &self.any.keep),
        }
    }

    /// The routes `fed` names (indexes into `routes`).
    fn routes_of<'a>(&'a self, fed: &'a [usize]) -> impl Iterator<Item = &'a Route> + 'a {
        fed.iter().map(|i| &self.routes[*i])
    }

    /// The one route of `fed` when there is exactly one (the route an unparsable record names).
    fn only(&self, fed: &[usize]) -> Option<RouteTag> {
        match fed {
            [i] => Some(self.routes[*i].tag.clone()),
            _ => None,
        }
    }

    /// Parses only what `keep` names (what the routes `fed` read), then maps.
    fn map_for(&self, fed: &[usize], keep: &Keep, value: Option<&[u8]>) -> Result<Mapped, RouteInvalid> {
        let fail = |invalid| RouteInvalid {
            route: self.only(fed),
            invalid,
        };
        match keep.slots() {
            Some(plan) => self.map_root(fed, &parse_slots(value, plan).map_err(fail)?),
            None => self.map_root(fed, &parse_kept(value, keep).map_err(fail)?),
        }
    }

    /// Maps a parsed record for the routes `fed` (indexes into `routes`). A route's tag is
    /// cloned only into what names it: its notifications, its skips, an error.
    fn map_root(&self, fed: &[usize], root: &impl Doc) -> Result<Mapped, RouteInvalid> {
        fn fail(route: &Route) -> impl Fn(Invalid) -> RouteInvalid + '_ {
            move |invalid| RouteInvalid {
                route: Some(route.tag.clone()),
                invalid,
            }
        }
        require_object(root).map_err(|invalid| RouteInvalid {
            route: self.only(fed),
            invalid,
        })?;
        let mut out = Mapped::default();
        let mut matched = false;
        for route in self.routes_of(fed) {
            let ty = event_type(&route.mapping, root).map_err(fail(route))?;
            if !route.mapping.add_to_cart_types.contains(&ty) {
                continue;
            }
            matched = true;
            let mapped = self.without_bots(map_one(route, root, ty).map_err(fail(route))?);
            out.event_time_ms = out.event_time_ms.or(mapped.event_time_ms);
            // The first route's list is taken whole (one list per record, not two).
            if out.notifications.is_empty() {
                out.notifications = mapped.notifications;
            } else {
                out.notifications.extend(mapped.notifications);
            }
            for reason in mapped.skipped {
                out.skipped.push(reason);
                out.route_skips.push((route.tag.clone(), reason));
            }
        }
        if !matched {
            let reason = if self.routes_of(fed).all(|r| r.tag.kind == Kind::AddToCart) {
                SkipReason::NotAddToCart
            } else {
                SkipReason::NoRoute
            };
            out.skipped.push(reason);
            if let Some(tag) = self.only(fed) {
                out.route_skips.push((tag, reason));
            }
        }
        Ok(out)
    }

    /// A bot visitor's notifications become `bot` skips. The notifications of one record share
    /// its User-Agent, so a run of the same one is judged once (a record of 150 lines ran the
    /// bot regexes 150 times; a User-Agent met again later is in the filter's memo), and nothing
    /// is allocated unless one is a bot.
    fn without_bots(&self, mut m: Mapped) -> Mapped {
        let Some(bots) = &self.bots else { return m };
        let mut last: Option<(&str, bool)> = None;
        let mut dropped = 0;
        for ua in m.notifications.iter().filter_map(|n| n.user_agent.as_deref()) {
            let bot = match last {
                Some((seen, bot)) if seen == ua => bot,
                _ => bots.is_bot(ua),
            };
            last = Some((ua, bot));
            dropped += usize::from(bot);
        }
        if dropped > 0 {
            m.notifications
                .retain(|n| !n.user_agent.as_deref().is_some_and(|ua| bots.is_bot(ua)));
            m.skipped.extend(std::iter::repeat_n(SkipReason::Bot, dropped));
        }
        m
    }

    /// Whether any route sends payments (and so needs the Api-Key).
    pub fn has_payment(&self) -> bool {
        self.routes.iter().any(|r| r.tag.kind == Kind::Payment)
    }
}

/// An invalid record and the route whose contract it breaks (None: it is not even JSON and its
/// topic feeds several routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInvalid {
    /// The route at fault.
    pub route: Option<RouteTag>,
    /// What is wrong, naming the field.
    pub invalid: Invalid,
}

/// One route's notifications for a record (an object) whose event type feeds it.
fn map_one(route: &Route, root: &impl Doc, event_type: String) -> Result<Mapped, Invalid> {
    let mut mapped = match route.tag.kind {
        Kind::AddToCart | Kind::Click => select(decode_typed(&route.mapping, root, event_type)?)?,
        kind => payload::map(kind, &route.mapping, root)?,
    };
    for n in &mut mapped.notifications {
        n.route = route.tag.clone();
    }
    Ok(mapped)
}

/// Resolves `[[routes]]` entry `i`: its mapping is `[mapping]`, then the kind's defaults, then the
/// entry's own `mapping` keys; its event types the entry's, else the kind's defaults.
fn resolve(cfg: &Config, i: usize, rc: &RouteConfig) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");
    if rc.name.trim().is_empty() {
        return Err(ConfigError::invalid(&key("name"), "must not be empty"));
    }
    let mut table = toml::Table::try_from(&cfg.mapping)
        .map_err(|e| ConfigError::invalid(&key("mapping"), e.to_string()))?;
    for (k, v) in rc.kind.mapping_defaults() {
        table.insert((*k).into(), toml::Value::String((*v).into()));
    }
    for (k, v) in &rc.mapping {
        if k == "add_to_cart_types" {
            return Err(ConfigError::invalid(
                &key("mapping.add_to_cart_types"),
                "is the route's event_types here",
            ));
        }
        table.insert(k.clone(), v.clone());
    }
    let mut mapping: MappingConfig = table
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::invalid(&key("mapping"), e.message().to_string()))?;
    if !rc.event_types.is_empty() {
        mapping.add_to_cart_types = rc.event_types.clone();
    } else if rc.kind != Kind::AddToCart {
        mapping.add_to_cart_types = rc
            .kind
            .default_event_types()
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    mapping
        .validate()
        .map_err(|e| ConfigError::invalid(&key("mapping"), e.to_string()))?;
    for t in &rc.topics {
        if !cfg.kafka.topics.contains(t) {
            return Err(ConfigError::invalid(
                &key("topics"),
                format!("{t:?} is not one of kafka.topics"),
            ));
        }
    }
    if let Some(rps) = rc.requests_per_second {
        if !(rps > 0.0 && rps.is_finite()) {
            return Err(ConfigError::invalid(
                &key("requests_per_second"),
                "must be a number above 0",
            ));
        }
    }
    Ok(Route {
        tag: RouteTag {
            name: rc.name.as_str().into(),
            kind: rc.kind,
        },
        topics: if rc.topics.is_empty() {
            cfg.kafka.topics.clone()
        } else {
            rc.topics.clone()
        },
        mapping,
        requests_per_second: rc.requests_per_second,
    })
}

#[cfg(test)]
mod tests;
