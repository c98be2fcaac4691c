// amqplib (the Node.js AMQP 0-9-1 client) against a real weir broker.
//
// One broker for the file (started in `before`, stopped cleanly in `after`); each test
// uses its own names and its own connection, and every wait has a deadline so a broker
// that stays silent fails the test instead of hanging CI.
'use strict';

const assert = require('node:assert/strict');
const { after, before, test } = require('node:test');
const amqp = require('amqplib');
const { Broker } = require('./broker');

const TEST_TIMEOUT_MS = 30_000;
const WAIT_MS = 10_000;

let broker;

before(async () => {
  broker = await new Broker().start();
});

after(async () => {
  await broker?.stop();
});

/** Resolves with `promise`, or rejects after `ms` saying what was awaited. */
function within(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Consumes and acks `count` messages from `queue`, resolving with them in arrival order. */
async function consumeN(channel, queue, count) {
  const messages = [];
  let done;
  const finished = new Promise((resolve) => {
    done = resolve;
  });
  const { consumerTag } = await channel.consume(queue, (message) => {
    assert.ok(message !== null, `consumer on ${queue} was cancelled by the server`);
    messages.push(message);
    channel.ack(message);
    if (messages.length === count) done();
  });
  await within(finished, `${count} deliveries from ${queue}`);
  await channel.cancel(consumerTag);
  return messages;
}

async function connect(t) {
  const connection = await within(amqp.connect(broker.url()), 'the connection to open');
  t.after(() => connection.close().catch(() => {}));
  return connection;
}

test('durable queue: confirmed persistent publishes are consumed in order and acked', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const connection = await connect(t);
  assert.equal(connection.connection.serverProperties.product, 'Weir');

  const publisher = await connection.createConfirmChannel();
  const queue = 'node.durable';
  const declared = await publisher.assertQueue(queue, { durable: true });
  assert.deepEqual(declared, { queue, messageCount: 0, consumerCount: 0 });

  const count = 20;
  const confirmed = [];
  for (let i = 0; i < count; i++) {
    confirmed.push(
      new Promise((resolve, reject) => {
        publisher.sendToQueue(queue, Buffer.from(`message ${i}`), { persistent: true, messageId: `m${i}` }, (err) =>
          err ? reject(err) : resolve(),
        );
      }),
    );
  }
  await within(Promise.all(confirmed), `${count} publisher confirms`);
  await within(publisher.waitForConfirms(), 'waitForConfirms');
  // Confirmed means on disk and in the queue: a passive declare counts them all.
  assert.equal((await publisher.checkQueue(queue)).messageCount, count);

  const consumer = await connection.createChannel();
  await consumer.prefetch(5); // fewer than the queue holds: later deliveries wait for acks
  const messages = await consumeN(consumer, queue, count);
  messages.forEach((message, i) => {
    assert.equal(message.content.toString(), `message ${i}`);
    assert.equal(message.properties.deliveryMode, 2);
    assert.equal(message.properties.messageId, `m${i}`);
    assert.equal(message.fields.redelivered, false);
    assert.equal(message.fields.routingKey, queue);
  });
  // Closing the channel would requeue anything unacked, so an empty queue afterwards
  // proves every ack was applied.
  await consumer.close();
  assert.equal((await publisher.checkQueue(queue)).messageCount, 0);
  await publisher.deleteQueue(queue);
});

test('fanout exchange copies a message to two exclusive server-named queues', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const connection = await connect(t);
  const channel = await connection.createChannel();
  const exchange = 'node.fanout';
  await channel.assertExchange(exchange, 'fanout', { durable: false });

  const queues = [];
  for (let i = 0; i < 2; i++) {
    const { queue, messageCount } = await channel.assertQueue('', { exclusive: true });
    assert.match(queue, /^amq\.gen-/);
    assert.equal(messageCount, 0);
    await channel.bindQueue(queue, exchange, '');
    queues.push(queue);
  }
  assert.notEqual(queues[0], queues[1]);

  // A fanout exchange ignores the routing key.
  assert.equal(channel.publish(exchange, 'ignored', Buffer.from('to everyone')), true);
  for (const queue of queues) {
    const [message] = await consumeN(channel, queue, 1);
    assert.equal(message.content.toString(), 'to everyone');
    assert.equal(message.fields.exchange, exchange);
    assert.equal(message.fields.routingKey, 'ignored');
  }

  // Exclusive queues belong to their connection: another connection may not use them.
  const other = await connect(t);
  const otherChannel = await other.createChannel();
  const otherError = new Promise((resolve) => otherChannel.once('error', resolve));
  await assert.rejects(otherChannel.checkQueue(queues[0]), (error) => error.code === 405);
  assert.equal((await within(otherError, 'the 405 channel error')).code, 405);

  await channel.deleteExchange(exchange);
});

test('passive declare of a missing queue closes the channel with 404', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const connection = await connect(t);
  const channel = await connection.createChannel();
  const channelError = new Promise((resolve) => channel.once('error', resolve));
  const closed = new Promise((resolve) => channel.once('close', resolve));

  await assert.rejects(channel.checkQueue('node.no-such-queue'), (error) => {
    assert.equal(error.code, 404);
    assert.match(error.message, /NOT_FOUND - no queue 'node.no-such-queue' in vhost '\/'/);
    return true;
  });
  assert.equal((await within(channelError, 'the channel error event')).code, 404);
  await within(closed, 'the channel to close');

  // Only the channel is gone: the connection still opens channels and declares queues.
  const again = await connection.createChannel();
  const { queue } = await again.assertQueue('', { exclusive: true });
  assert.match(queue, /^amq\.gen-/);
});
