"""Small helpers shared by the pika tests."""
import pika


def connect(broker):
    conn = pika.BlockingConnection(broker.params())
    return conn, conn.channel()


def depth(ch, queue):
    """Ready messages in `queue` (passive queue.declare)."""
    return ch.queue_declare(queue, passive=True).method.message_count


def drain(ch, queue):
    """Every ready message's body, in delivery order, taken with auto-ack `basic.get`."""
    bodies = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body.decode())
