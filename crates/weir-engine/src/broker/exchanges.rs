//! Exchange and binding commands: `exchange.declare/delete`, `queue.bind/unbind`,
//! `exchange.bind/unbind`, with RabbitMQ's checks and reply codes (docs/AMQP.md).
//!
//! Durability: a durable exchange's declaration and deletion are logged; a binding is logged
//! when both its source and its destination are durable (as RabbitMQ does). Auto-delete
//! exchanges removed as a side effect are logged as deletions when durable, so the state after
//! a replay is the state before the crash.

use crate::api::{ArgValue, BindRequest, BindTarget, Event, ExchangeDeclare, Origin};
use crate::error::{EngineError, ErrorKind};
use crate::records::{self, BindingRecord};
use crate::security::Access;
use crate::topology::{Binding, Destination, Exchange, ExchangeKind};

use weir_log::Storage;

use super::{error, no_exchange, Broker};

fn default_exchange_refused() -> EngineError {
    error(ErrorKind::AccessRefused, "operation not permitted on the default exchange".into())
}

impl<S: Storage> Broker<S> {
    pub(super) fn exchange_declare(
        &mut self,
        origin: Origin,
        declare: ExchangeDeclare,
        no_wait: bool,
    ) -> Result<(), EngineError> {
        let vhost = self.vhost_of(origin.connection)?.to_string();
        let name = declare.name.as_str();
        if name.is_empty() && !declare.passive {
            return Err(default_exchange_refused());
        }
        if !declare.passive {
            self.authorize(origin.connection, Access::Configure, "exchange", name)?;
            if let Some(ArgValue::Str(alternate)) =
                declare.arguments.iter().find(|(k, _)| k == "alternate-exchange").map(|(_, v)| v)
            {
                // As RabbitMQ: unroutable messages are read from this exchange into the other.
                self.authorize(origin.connection, Access::Write, "exchange", alternate)?;
                self.authorize(origin.connection, Access::Read, "exchange", name)?;
            }
        }
        let existing = self.vhosts[&vhost].exchanges.get(name);
        match existing {
            _ if name.is_empty() => {}
            Some(_) if declare.passive => {}
            Some(exchange) => check_equivalent(exchange, &declare, &vhost)?,
            None if declare.passive => return Err(no_exchange(name, &vhost)),
            None => {
                let kind = ExchangeKind::parse(&declare.kind).ok_or_else(|| {
                    error(ErrorKind::CommandInvalid, format!("invalid exchange type '{}'", declare.kind))
                })?;
                if name.starts_with("amq.") {
                    return Err(error(
                        ErrorKind::AccessRefused,
                        format!("exchange name '{name}' contains reserved prefix 'amq.*'"),
                    ));
                }
                let mut exchange = Exchange::new(name, kind);
                exchange.durable = declare.durable;
                exchange.auto_delete = declare.auto_delete;
                exchange.internal = declare.internal;
                exchange.arguments = declare.arguments.clone();
                if exchange.durable {
                    self.refuse_if_read_only()?;
                    self.append_with(records::KIND_EXCHANGE_DECLARE, |w| {
                        records::encode_exchange(w, &vhost, &exchange)
                    })?;
                }
                let exchanges = &mut self.vhosts.get_mut(&vhost).expect("vhost exists").exchanges;
                exchanges.insert(exchange.name.clone(), exchange);
            }
        }
        if !no_wait {
            self.reply(origin.connection, Event::ExchangeDeclareOk { channel: origin.channel });
        }
        Ok(())
    }

    pub(super) fn exchange_delete(
        &mut self,
        origin: Origin,
        name: &str,
        if_unused: bool,
        no_wait: bool,
    ) -> Result<(), EngineError> {
        let vhost = self.vhost_of(origin.connection)?.to_string();
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        self.authorize(origin.connection, Access::Configure, "exchange", name)?;
        // Deleting what does not exist succeeds (RabbitMQ does the same).
        if let Some(exchange) = self.vhosts[&vhost].exchanges.get(name) {
            if exchange.predeclared {
                return Err(error(
                    ErrorKind::AccessRefused,
                    format!("operation not permitted on exchange '{name}' in vhost '{vhost}'"),
                ));
            }
            if if_unused && !exchange.bindings.is_empty() {
                return Err(error(
                    ErrorKind::PreconditionFailed,
                    format!("exchange '{name}' in vhost '{vhost}' in use"),
                ));
            }
            if exchange.durable {
                self.refuse_if_read_only()?;
            }
            let removed = self.vhosts.get_mut(&vhost).expect("vhost exists").delete_exchange(name);
            self.log_exchanges_deleted(&vhost, &removed);
        }
        if !no_wait {
            self.reply(origin.connection, Event::ExchangeDeleteOk { channel: origin.channel });
        }
        Ok(())
    }

    pub(super) fn bind(&mut self, origin: Origin, bind: BindRequest, no_wait: bool) -> Result<(), EngineError> {
        let (vhost, binding, durable) = self.resolve_binding(origin, &bind)?;
        if durable {
            self.refuse_if_read_only()?;
        }
        let added = self.vhosts.get_mut(&vhost).expect("vhost exists").bind(&bind.source, binding.clone());
        if added && durable {
            let record = binding_record(&vhost, &bind.source, &binding);
            self.append_with(records::KIND_BIND, |w| records::encode_binding(w, &record))?;
        }
        if !no_wait {
            let to_exchange = matches!(bind.destination, BindTarget::Exchange(_));
            self.reply(origin.connection, Event::BindOk { channel: origin.channel, to_exchange });
        }
        Ok(())
    }

    pub(super) fn unbind(&mut self, origin: Origin, bind: BindRequest, no_wait: bool) -> Result<(), EngineError> {
        // Unbinding what does not exist succeeds (RabbitMQ does the same).
        match self.resolve_binding(origin, &bind) {
            Ok((vhost, binding, durable)) => {
                // As bind: a durable change is refused before memory changes, so memory and log
                // never disagree.
                if durable {
                    self.refuse_if_read_only()?;
                }
                let removed = self.vhosts.get_mut(&vhost).expect("vhost exists").unbind(&bind.source, &binding);
                if let Some(auto_deleted) = removed {
                    if durable {
                        let record = binding_record(&vhost, &bind.source, &binding);
                        self.append_with(records::KIND_UNBIND, |w| records::encode_binding(w, &record))?;
                    }
                    self.log_exchanges_deleted(&vhost, &auto_deleted);
                }
            }
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if !no_wait {
            let to_exchange = matches!(bind.destination, BindTarget::Exchange(_));
            self.reply(origin.connection, Event::UnbindOk { channel: origin.channel, to_exchange });
        }
        Ok(())
    }

    /// Check a bind request's names and build the binding; also whether it is durable.
    fn resolve_binding(&self, origin: Origin, bind: &BindRequest) -> Result<(String, Binding, bool), EngineError> {
        let vhost = self.vhost_of(origin.connection)?.to_string();
        if bind.source.is_empty() {
            return Err(default_exchange_refused());
        }
        match &bind.destination {
            BindTarget::Queue(name) => self.authorize(origin.connection, Access::Write, "queue", name)?,
            BindTarget::Exchange(name) => self.authorize(origin.connection, Access::Write, "exchange", name)?,
        }
        self.authorize(origin.connection, Access::Read, "exchange", &bind.source)?;
        let topology = &self.vhosts[&vhost];
        let source = topology.exchanges.get(&bind.source).ok_or_else(|| no_exchange(&bind.source, &vhost))?;
        let (destination, destination_durable) = match &bind.destination {
            BindTarget::Queue(name) => {
                let id = self.lookup_queue(origin.connection, name)?;
                (Destination::Queue(id), self.queues[&id].is_logged())
            }
            BindTarget::Exchange(name) => {
                if name.is_empty() {
                    return Err(default_exchange_refused());
                }
                let exchange = topology.exchanges.get(name).ok_or_else(|| no_exchange(name, &vhost))?;
                (Destination::Exchange(name.clone()), exchange.durable)
            }
        };
        let binding = Binding { destination, routing_key: bind.routing_key.clone(), arguments: bind.arguments.clone() };
        Ok((vhost, binding, source.durable && destination_durable))
    }

    /// Log the deletion of the durable ones among `removed` (removed already in memory).
    pub(super) fn log_exchanges_deleted(&mut self, vhost: &str, removed: &[Exchange]) {
        for exchange in removed.iter().filter(|e| e.durable && !e.predeclared) {
            let logged = self.append_with(records::KIND_EXCHANGE_DELETE, |w| {
                records::encode_exchange_delete(w, vhost, &exchange.name)
            });
            if let Err(e) = logged {
                tracing::error!(exchange = exchange.name, "cannot log an exchange deletion: {e}");
            }
        }
    }
}

pub(crate) fn binding_record(vhost: &str, source: &str, binding: &Binding) -> BindingRecord {
    BindingRecord {
        vhost: vhost.to_string(),
        source: source.to_string(),
        destination: binding.destination.clone(),
        routing_key: binding.routing_key.clone(),
        arguments: binding.arguments.clone(),
    }
}

/// RabbitMQ's equivalence rule for re-declaring an existing exchange.
fn check_equivalent(exchange: &Exchange, declare: &ExchangeDeclare, vhost: &str) -> Result<(), EngineError> {
    let mismatch = |field: &str, received: String, current: String| {
        error(
            ErrorKind::PreconditionFailed,
            format!(
                "inequivalent arg '{field}' for exchange '{}' in vhost '{vhost}': received '{received}' but current is '{current}'",
                exchange.name
            ),
        )
    };
    if declare.kind != exchange.kind.name() {
        return Err(mismatch("type", declare.kind.clone(), exchange.kind.name().into()));
    }
    if declare.durable != exchange.durable {
        return Err(mismatch("durable", declare.durable.to_string(), exchange.durable.to_string()));
    }
    if declare.auto_delete != exchange.auto_delete {
        return Err(mismatch("auto_delete", declare.auto_delete.to_string(), exchange.auto_delete.to_string()));
    }
    if declare.internal != exchange.internal {
        return Err(mismatch("internal", declare.internal.to_string(), exchange.internal.to_string()));
    }
    if declare.arguments != exchange.arguments {
        return Err(mismatch("arguments", format!("{:?}", declare.arguments), format!("{:?}", exchange.arguments)));
    }
    Ok(())
}
