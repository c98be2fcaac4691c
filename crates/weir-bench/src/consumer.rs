//! One consumer connection: reads deliveries in large chunks, times them, and acks with
//! `multiple = true` every N deliveries (or not at all with `--auto-ack`).
//!
//! One task owns both halves: it reads (cancel-safely, racing the stop signal), runs the
//! sans-IO [`DeliveryTracker`] over everything buffered with one clock reading per chunk,
//! and writes an ack when one is due. Acks are tiny, so writing them inline never blocks
//! behind a full socket. On stop it acks everything it counted, so a `--count` run leaves no
//! unacked message behind to be redelivered; deliveries that arrive while the connection
//! closes are not counted (manually acked ones go back to the queue).

use bytes::BytesMut;
use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use weir_amqp_codec::amq_protocol::protocol::{basic, AMQPClass};

use crate::body::unix_now_ns;
use crate::client::{check_not_closed, close_connection, unexpected, Client, ClientError};
use crate::config::AckMode;
use crate::delivery::DeliveryTracker;
use crate::stats::{latency_histogram, Shared};
use crate::url::AmqpUrl;
use crate::wire::{self, CHANNEL};

/// What one consumer measured, and how it ended: the latencies survive a failure.
#[derive(Debug)]
pub struct ConsumerOutcome {
    /// Publish-to-delivery latencies, in microseconds.
    pub latencies_us: Histogram<u64>,
    /// Why the consumer failed, if it did.
    pub error: Option<ClientError>,
}

/// Connects consumer `index`, sets its prefetch (manual acks) and starts consuming `queue`.
pub async fn connect(url: &AmqpUrl, index: u32, queue: &str, ack: AckMode) -> Result<Client, ClientError> {
    let mut client = Client::connect(url, &format!("weir-bench consumer {index}")).await?;
    if let AckMode::Manual { prefetch, .. } = ack {
        match client.call(wire::basic_qos(prefetch), "basic.qos-ok").await? {
            AMQPClass::Basic(basic::AMQPMethod::QosOk(_)) => {}
            other => return Err(unexpected("basic.qos-ok", &other)),
        }
    }
    let tag = format!("weir-bench-{index}");
    let consume = wire::basic_consume(queue, &tag, ack == AckMode::Auto);
    match client.call(consume, "basic.consume-ok").await? {
        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)) => {}
        other => return Err(unexpected("basic.consume-ok", &other)),
    }
    Ok(client)
}

/// Consumes until the stop signal, acks what it counted, and closes the connection.
pub async fn run(client: Client, ack: AckMode, shared: &Shared) -> ConsumerOutcome {
    let mut latencies_us = latency_histogram();
    let error = consume(client, ack, shared, &mut latencies_us).await.err();
    ConsumerOutcome { latencies_us, error }
}

async fn consume(
    client: Client,
    ack: AckMode,
    shared: &Shared,
    latencies_us: &mut Histogram<u64>,
) -> Result<(), ClientError> {
    let Client { mut reader, mut writer } = client;
    let mut stop = shared.stop_signal();
    let mut tracker = DeliveryTracker::new(reader.frame_max);
    let mut out = BytesMut::new();
    loop {
        let now_ns = unix_now_ns();
        loop {
            let processed = tracker.process(&mut reader.buf, now_ns, latencies_us)?;
            shared.add_consumed(processed.delivered);
            match processed.method {
                None => break,
                Some(method) => on_method(&method)?,
            }
        }
        if let AckMode::Manual { every, .. } = ack {
            if let Some(tag) = tracker.ack_due(u64::from(every)) {
                send_ack(&mut writer, &mut out, tag).await?;
            }
        }
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            read = reader.fill() => { read?; }
            _ = stop.changed() => {}
        }
    }
    if matches!(ack, AckMode::Manual { .. }) {
        if let Some(tag) = tracker.ack_all() {
            send_ack(&mut writer, &mut out, tag).await?;
        }
    }
    close_connection(&mut reader, &mut writer).await
}

async fn send_ack(writer: &mut OwnedWriteHalf, out: &mut BytesMut, tag: u64) -> Result<(), ClientError> {
    out.clear();
    wire::put_method(out, CHANNEL, wire::basic_ack(tag, true));
    writer.write_all(out).await?;
    Ok(())
}

/// A method among the deliveries: closes and cancels end the consumer, the rest is noise.
fn on_method(method: &AMQPClass) -> Result<(), ClientError> {
    check_not_closed(method)?;
    if let AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)) = method {
        return Err(ClientError::ConsumerCancelled(cancel.consumer_tag.to_string()));
    }
    Ok(())
}
