//! Read-only views of the broker's state for the HTTP API, metrics and the console
//! ([`Command::Inspect`](crate::Command::Inspect)). Answered within the engine turn that
//! receives the question, so a view is one consistent moment; it may include changes whose
//! log records are not fsynced yet (a view reports state, never durability).

use crate::records::VhostRecord;
use weir_log::Storage;

use crate::api::{BindingView, ConnectionView, ExchangeView, Inspect, InspectReply, OverviewView, QueueView};
use crate::topology::Destination;

use super::{Broker, QueueState};

impl<S: Storage> Broker<S> {
    pub(super) fn inspect(&self, query: Inspect) -> InspectReply {
        match query {
            Inspect::Overview => InspectReply::Overview(self.overview()),
            Inspect::Vhosts => {
                let mut vhosts: Vec<VhostRecord> = self
                    .vhosts
                    .iter()
                    .map(|(name, vhost)| VhostRecord { name: name.clone(), limits: vhost.limits.clone() })
                    .collect();
                vhosts.sort_by(|a, b| a.name.cmp(&b.name));
                InspectReply::Vhosts(vhosts)
            }
            Inspect::Queues { vhost } => {
                let mut views: Vec<QueueView> =
                    self.queues.values().filter(|q| in_vhost(&vhost, &q.vhost)).map(queue_view).collect();
                views.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
                InspectReply::Queues(views)
            }
            Inspect::Exchanges { vhost } => InspectReply::Exchanges(self.exchange_views(&vhost)),
            Inspect::Bindings { vhost } => InspectReply::Bindings(self.binding_views(&vhost)),
            Inspect::Connections => InspectReply::Connections(self.connection_views()),
        }
    }

    fn overview(&self) -> OverviewView {
        let mut view = OverviewView {
            vhosts: self.vhosts.len() as u32,
            queues: self.queues.len() as u32,
            exchanges: self.vhosts.values().map(|v| v.exchanges.len() as u32).sum(),
            read_only: self.read_only.clone(),
            counters: self.deleted_counters,
            durable_lsn: self.log.durable_lsn(),
            ..OverviewView::default()
        };
        for queue in self.queues.values() {
            let stats = queue.messages.stats();
            view.ready += stats.ready_messages;
            view.unacked += stats.unacked_messages;
            view.delayed += stats.delayed_messages;
            view.consumers += queue.consumers.len() as u32;
            view.counters += queue.counters;
        }
        for connection in self.connections.values().filter(|c| !c.info.internal) {
            view.connections += 1;
            view.channels += connection.channels.len() as u32;
        }
        for segment in self.log.segments() {
            view.log_segments += 1;
            view.log_bytes += segment.size_bytes;
        }
        view
    }

    fn exchange_views(&self, vhost: &Option<String>) -> Vec<ExchangeView> {
        let mut views = Vec::new();
        for (vhost_name, v) in self.vhosts.iter().filter(|(name, _)| in_vhost(vhost, name)) {
            // The default exchange is implicit (no entry in the vhost), but clients see it.
            views.push(ExchangeView {
                vhost: vhost_name.clone(),
                name: String::new(),
                kind: "direct".into(),
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: Vec::new(),
            });
            for exchange in v.exchanges.values() {
                views.push(ExchangeView {
                    vhost: vhost_name.clone(),
                    name: exchange.name.clone(),
                    kind: exchange.kind.name().to_string(),
                    durable: exchange.durable,
                    auto_delete: exchange.auto_delete,
                    internal: exchange.internal,
                    arguments: exchange.arguments.clone(),
                });
            }
        }
        views.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        views
    }

    fn binding_views(&self, vhost: &Option<String>) -> Vec<BindingView> {
        let mut views = Vec::new();
        for (vhost_name, v) in self.vhosts.iter().filter(|(name, _)| in_vhost(vhost, name)) {
            for exchange in v.exchanges.values() {
                for binding in &exchange.bindings {
                    let (destination, destination_is_queue) = match &binding.destination {
                        Destination::Queue(id) => match self.queues.get(id) {
                            Some(queue) => (queue.name.clone(), true),
                            None => continue,
                        },
                        Destination::Exchange(name) => (name.clone(), false),
                    };
                    views.push(BindingView {
                        vhost: vhost_name.clone(),
                        source: exchange.name.clone(),
                        destination,
                        destination_is_queue,
                        routing_key: binding.routing_key.clone(),
                        arguments: binding.arguments.clone(),
                    });
                }
            }
        }
        views.sort_by(|a, b| {
            (&a.vhost, &a.source, &a.destination, &a.routing_key).cmp(&(
                &b.vhost,
                &b.source,
                &b.destination,
                &b.routing_key,
            ))
        });
        views
    }

    fn connection_views(&self) -> Vec<ConnectionView> {
        let mut views: Vec<ConnectionView> = self
            .connections
            .iter()
            .filter(|(_, c)| !c.info.internal)
            .map(|(id, c)| ConnectionView {
                id: *id,
                vhost: c.vhost.clone(),
                info: c.info.clone(),
                channels: c.channels.len() as u32,
                consumers: c.channels.values().map(|ch| ch.consumers.len() as u32).sum(),
                unacked: c.channels.values().map(|ch| ch.unacked.len() as u64).sum(),
            })
            .collect();
        views.sort_by_key(|v| v.id);
        views
    }
}

fn in_vhost(filter: &Option<String>, vhost: &str) -> bool {
    filter.as_deref().is_none_or(|wanted| wanted == vhost)
}

fn queue_view(queue: &QueueState) -> QueueView {
    let stats = queue.messages.stats();
    QueueView {
        vhost: queue.vhost.clone(),
        name: queue.name.clone(),
        durable: queue.durable,
        auto_delete: queue.auto_delete,
        exclusive: queue.exclusive_owner.is_some(),
        arguments: queue.arguments.clone(),
        settings: queue.settings.clone(),
        ready: stats.ready_messages,
        ready_bytes: stats.ready_bytes,
        unacked: stats.unacked_messages,
        unacked_bytes: stats.unacked_bytes,
        delayed: stats.delayed_messages,
        delayed_bytes: stats.delayed_bytes,
        consumers: queue.consumers.len() as u32,
        counters: queue.counters,
    }
}
