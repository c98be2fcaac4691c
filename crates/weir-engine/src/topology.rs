//! Vhosts, exchanges and bindings: where a publish goes.
//!
//! Pure data and pure functions: the broker (live) and the replay (start-up) both change the
//! topology through these methods and nothing else, so they cannot disagree. Logging is the
//! caller's business; the methods report what changed (for example the auto-delete exchanges
//! a removal took with it) so the caller can log it.
//!
//! Routing follows RabbitMQ: the default exchange `""` reaches the queue named by the routing
//! key; `direct` matches the key exactly; `fanout` ignores it; `topic` matches dot-separated
//! words with `*` (one word) and `#` (zero or more); `headers` matches binding arguments
//! against message headers (`x-match` = `all` (default), `any`, `all-with-x`, `any-with-x`).
//! Exchange-to-exchange bindings are followed with cycle detection; an exchange that routes
//! nowhere hands the message to its `alternate-exchange`, if it has one.

use std::collections::{HashMap, HashSet};

use crate::api::ArgValue;

pub type QueueId = u32;

/// The exchanges every vhost has, as RabbitMQ declares them.
pub const PREDECLARED_EXCHANGES: [(&str, ExchangeKind); 6] = [
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
    // Weir's own events (capacity watermarks): bind a queue to watch them.
    (EVENTS_EXCHANGE, ExchangeKind::Topic),
];

/// Where the broker publishes its events, in every vhost.
pub const EVENTS_EXCHANGE: &str = "weir.events";

/// Exchange-to-exchange hops followed for one publish at most (cycles are cut anyway).
pub const ROUTING_EXCHANGES_MAX: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    Queue(QueueId),
    Exchange(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: Vec<(String, ArgValue)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: Vec<(String, ArgValue)>,
    /// Bindings with this exchange as their source.
    pub bindings: Vec<Binding>,
    /// Declared by the broker itself (`amq.*`): never logged, never deleted.
    pub predeclared: bool,
}

impl Exchange {
    pub fn new(name: &str, kind: ExchangeKind) -> Self {
        Self {
            name: name.to_string(),
            kind,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: Vec::new(),
            bindings: Vec::new(),
            predeclared: false,
        }
    }

    /// The definition alone (no bindings): what a declare record or a snapshot holds.
    pub fn definition(&self) -> Exchange {
        Exchange { bindings: Vec::new(), ..self.clone() }
    }

    pub fn alternate_exchange(&self) -> Option<&str> {
        self.arguments.iter().find(|(k, _)| k == "alternate-exchange").and_then(|(_, v)| match v {
            ArgValue::Str(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The destinations of this exchange's bindings that match a message.
    fn matches<'a>(
        &'a self,
        routing_key: &'a str,
        headers: &'a [(String, ArgValue)],
    ) -> impl Iterator<Item = &'a Destination> + 'a {
        self.bindings
            .iter()
            .filter(move |b| match self.kind {
                ExchangeKind::Direct => b.routing_key == routing_key,
                ExchangeKind::Fanout => true,
                ExchangeKind::Topic => topic_matches(&b.routing_key, routing_key),
                ExchangeKind::Headers => headers_match(&b.arguments, headers),
            })
            .map(|b| &b.destination)
    }
}

/// One vhost's names. A new (or default) vhost has the predeclared `amq.*` exchanges.
#[derive(Debug)]
pub struct Vhost {
    pub queues: HashMap<String, QueueId>,
    pub exchanges: HashMap<String, Exchange>,
    /// Quotas and settings given when the vhost was created, as logged.
    pub limits: Vec<(String, ArgValue)>,
}

impl Default for Vhost {
    fn default() -> Self {
        Self::new()
    }
}

/// The vhost limits Weir knows (RabbitMQ's names): how many queues and client connections.
pub const VHOST_LIMITS: [&str; 4] = ["max-queues", "max-connections", "max-messages", "max-bytes"];

/// Check limits given for a vhost: known names, whole numbers from 0 up.
pub fn check_vhost_limits(limits: &[(String, ArgValue)]) -> Result<(), String> {
    for (key, value) in limits {
        if !VHOST_LIMITS.contains(&key.as_str()) {
            return Err(format!("unknown vhost limit '{key}' (known: {})", VHOST_LIMITS.join(", ")));
        }
        if !matches!(value, ArgValue::Int(n) if *n >= 0) {
            return Err(format!("vhost limit '{key}' must be a whole number from 0 up"));
        }
    }
    Ok(())
}

impl Vhost {
    /// The limit called `key`, if the vhost has one.
    pub fn limit(&self, key: &str) -> Option<u64> {
        self.limits.iter().find(|(k, _)| k == key).and_then(|(_, value)| match value {
            ArgValue::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        })
    }

    pub fn new() -> Self {
        let mut vhost = Self { queues: HashMap::new(), exchanges: HashMap::new(), limits: Vec::new() };
        for (name, kind) in PREDECLARED_EXCHANGES {
            let mut exchange = Exchange::new(name, kind);
            exchange.predeclared = true;
            // Only the broker publishes its events: clients cannot fake them.
            exchange.internal = name == EVENTS_EXCHANGE;
            vhost.exchanges.insert(name.to_string(), exchange);
        }
        vhost
    }

    /// The queues a message reaches from `exchange` (which must exist; `""` is the default
    /// exchange). Each queue appears once.
    pub fn route(&self, exchange: &str, routing_key: &str, headers: &[(String, ArgValue)]) -> Vec<QueueId> {
        if exchange.is_empty() {
            return self.queues.get(routing_key).copied().into_iter().collect();
        }
        let mut queues = Vec::new();
        let mut seen_queues = HashSet::new();
        let mut visited = HashSet::new();
        let mut pending = vec![exchange];
        while let Some(name) = pending.pop() {
            if visited.len() >= ROUTING_EXCHANGES_MAX || !visited.insert(name) {
                continue;
            }
            let Some(exchange) = self.exchanges.get(name) else {
                continue; // a binding or alternate exchange naming a deleted exchange
            };
            let mut routed = false;
            for destination in exchange.matches(routing_key, headers) {
                routed = true;
                match destination {
                    Destination::Queue(id) => {
                        if seen_queues.insert(*id) {
                            queues.push(*id);
                        }
                    }
                    Destination::Exchange(next) => pending.push(next),
                }
            }
            if !routed {
                if let Some(alternate) = exchange.alternate_exchange() {
                    pending.push(alternate);
                }
            }
        }
        queues
    }

    /// Add a binding; false if the same one exists already (binding is idempotent).
    pub fn bind(&mut self, source: &str, binding: Binding) -> bool {
        let exchange = self.exchanges.get_mut(source).expect("caller checked the source exists");
        if exchange.bindings.iter().any(|b| same_binding(b, &binding)) {
            return false;
        }
        exchange.bindings.push(binding);
        true
    }

    /// Remove a binding; returns the auto-delete exchanges that went with it (their own
    /// removal cascades too), or `None` if there was no such binding.
    pub fn unbind(&mut self, source: &str, binding: &Binding) -> Option<Vec<Exchange>> {
        let exchange = self.exchanges.get_mut(source)?;
        let index = exchange.bindings.iter().position(|b| same_binding(b, binding))?;
        exchange.bindings.remove(index);
        Some(self.collect_auto_deleted(vec![source.to_string()]))
    }

    /// Remove every binding leading to `destination` (its queue or exchange is going away).
    /// Returns the auto-delete exchanges that went with them.
    pub fn remove_bindings_to(&mut self, destination: &Destination) -> Vec<Exchange> {
        let mut touched = Vec::new();
        for exchange in self.exchanges.values_mut() {
            let before = exchange.bindings.len();
            exchange.bindings.retain(|b| &b.destination != destination);
            if exchange.bindings.len() != before {
                touched.push(exchange.name.clone());
            }
        }
        self.collect_auto_deleted(touched)
    }

    /// Delete an exchange with its bindings (both as source and as destination). Returns every
    /// exchange removed, itself first.
    pub fn delete_exchange(&mut self, name: &str) -> Vec<Exchange> {
        let Some(exchange) = self.exchanges.remove(name) else {
            return Vec::new();
        };
        let mut removed = vec![exchange];
        removed.extend(self.remove_bindings_to(&Destination::Exchange(name.to_string())));
        removed
    }

    /// Auto-delete exchanges among `candidates` that lost their last binding are deleted, and
    /// so on down the chain.
    fn collect_auto_deleted(&mut self, mut candidates: Vec<String>) -> Vec<Exchange> {
        let mut removed = Vec::new();
        while let Some(name) = candidates.pop() {
            let Some(exchange) = self.exchanges.get(&name) else { continue };
            if !exchange.auto_delete || !exchange.bindings.is_empty() || exchange.predeclared {
                continue;
            }
            let exchange = self.exchanges.remove(&name).expect("looked up above");
            let destination = Destination::Exchange(name.clone());
            for exchange in self.exchanges.values_mut() {
                let before = exchange.bindings.len();
                exchange.bindings.retain(|b| b.destination != destination);
                if exchange.bindings.len() != before {
                    candidates.push(exchange.name.clone());
                }
            }
            removed.push(exchange);
        }
        removed
    }
}

fn same_binding(a: &Binding, b: &Binding) -> bool {
    a.destination == b.destination && a.routing_key == b.routing_key && a.arguments == b.arguments
}

/// Split a topic key or pattern into words; the empty string has no words (as RabbitMQ).
fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// `*` matches exactly one word, `#` zero or more. Dynamic programming over (pattern word,
/// key word), so no pattern can make it exponential.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    let pattern = words(pattern);
    let key = words(routing_key);
    // matched[j]: pattern[i..] matches key[j..], for the current i (rolled over i).
    let mut next = vec![false; key.len() + 1];
    next[key.len()] = true;
    for i in (0..pattern.len()).rev() {
        let mut current = vec![false; key.len() + 1];
        for j in (0..=key.len()).rev() {
            current[j] = match pattern[i] {
                "#" => next[j] || (j < key.len() && current[j + 1]),
                "*" => j < key.len() && next[j + 1],
                word => j < key.len() && key[j] == word && next[j + 1],
            };
        }
        next = current;
    }
    next[0]
}

/// RabbitMQ's headers-exchange rule.
pub fn headers_match(binding: &[(String, ArgValue)], headers: &[(String, ArgValue)]) -> bool {
    let mode = binding.iter().find(|(k, _)| k == "x-match").map(|(_, v)| match v {
        ArgValue::Str(s) => s.as_str(),
        _ => "all",
    });
    let (any, with_x) = match mode.unwrap_or("all") {
        "any" => (true, false),
        "any-with-x" => (true, true),
        "all-with-x" => (false, true),
        _ => (false, false),
    };
    let mut considered = binding.iter().filter(|(k, _)| k != "x-match" && (with_x || !k.starts_with("x-")));
    let matches = |(key, value): &(String, ArgValue)| {
        headers.iter().any(|(k, v)| k == key && (matches!(value, ArgValue::Void) || v == value))
    };
    if any {
        considered.any(&matches)
    } else {
        considered.all(&matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("a.*.c", "a.b.c"));
        assert!(!topic_matches("a.*.c", "a.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#.c", "a.b.c"));
        assert!(!topic_matches("*", ""));
        assert!(topic_matches("*.orange.*", "quick.orange.rabbit"));
        assert!(topic_matches("lazy.#", "lazy.orange.male.rabbit"));
        assert!(!topic_matches("*.*.rabbit", "quick.orange.male.rabbit"));
        assert!(topic_matches("#.#.#", "x"));
        // Many `#`s cannot blow up.
        let pattern = vec!["#"; 200].join(".");
        let key = vec!["w"; 200].join(".");
        assert!(topic_matches(&pattern, &key));
    }

    #[test]
    fn headers_rules() {
        let h = |pairs: &[(&str, ArgValue)]| pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Vec<_>>();
        let message = h(&[("format", ArgValue::Str("pdf".into())), ("type", ArgValue::Str("report".into()))]);
        assert!(headers_match(&h(&[("format", ArgValue::Str("pdf".into()))]), &message));
        assert!(!headers_match(
            &h(&[("format", ArgValue::Str("pdf".into())), ("type", ArgValue::Str("log".into()))]),
            &message
        ));
        assert!(headers_match(
            &h(&[
                ("x-match", ArgValue::Str("any".into())),
                ("format", ArgValue::Str("zip".into())),
                ("type", ArgValue::Str("report".into()))
            ]),
            &message
        ));
        assert!(headers_match(&h(&[("format", ArgValue::Void)]), &message), "void matches presence");
    }

    #[test]
    fn exchange_to_exchange_cycles_and_alternates() {
        let mut vhost = Vhost::new();
        vhost.exchanges.insert("a".into(), Exchange::new("a", ExchangeKind::Fanout));
        vhost.exchanges.insert("b".into(), Exchange::new("b", ExchangeKind::Fanout));
        let to = |d: Destination| Binding { destination: d, routing_key: String::new(), arguments: Vec::new() };
        vhost.bind("a", to(Destination::Exchange("b".into())));
        vhost.bind("b", to(Destination::Exchange("a".into())));
        vhost.bind("b", to(Destination::Queue(7)));
        assert_eq!(vhost.route("a", "", &[]), vec![7], "the cycle is cut, the queue reached once");

        let mut with_alternate = Exchange::new("d", ExchangeKind::Direct);
        with_alternate.arguments.push(("alternate-exchange".into(), ArgValue::Str("b".into())));
        vhost.exchanges.insert("d".into(), with_alternate);
        assert_eq!(vhost.route("d", "nothing-bound", &[]), vec![7]);
    }

    #[test]
    fn auto_delete_cascades() {
        let mut vhost = Vhost::new();
        let mut x = Exchange::new("x", ExchangeKind::Fanout);
        x.auto_delete = true;
        vhost.exchanges.insert("x".into(), x);
        let binding = Binding { destination: Destination::Queue(1), routing_key: String::new(), arguments: Vec::new() };
        assert!(vhost.bind("x", binding.clone()));
        assert!(!vhost.bind("x", binding.clone()), "binding twice is one binding");
        let removed = vhost.remove_bindings_to(&Destination::Queue(1));
        assert_eq!(removed.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), vec!["x"]);
        assert!(!vhost.exchanges.contains_key("x"));
    }
}
