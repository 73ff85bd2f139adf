#!/usr/bin/env python3
"""An AMQP 0-9-1 client made of pika, against a real RabbitMQ.

Declares an exchange and a queue and binds them, turns publisher confirms
on, publishes N messages and one unroutable mandatory message (returned
with 312 NO_ROUTE), takes M of them with basic.get (acking all but one,
which is nacked without requeue), consumes the rest with a consumer that
acks each delivery, gets from an empty queue (get-empty), and provokes a
channel error by declaring the exchange again with a conflicting type
(406 PRECONDITION_FAILED). Writes what it did as JSON to LOG.

Usage: amqp_peer.py PORT LOG [N=20] [M=12]
"""
import json
import sys

import pika


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    m = int(sys.argv[4]) if len(sys.argv) > 4 else 12
    log = {"published": 0, "returned": 0, "got": 0, "acked": 0, "nacked": 0,
           "get_empty": 0, "delivered": 0, "channel_errors": 0}
    params = pika.ConnectionParameters(host="127.0.0.1", port=port, heartbeat=0)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.exchange_declare("orders", "direct")
    ch.queue_declare("jobs")
    ch.queue_declare("empty")
    ch.queue_bind("jobs", "orders", "job")
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("orders", "job", b"job-%d" % i)
        log["published"] += 1
    try:
        ch.basic_publish("orders", "nowhere", b"lost", mandatory=True)
    except pika.exceptions.UnroutableError:
        log["returned"] += 1
    log["published"] += 1
    for i in range(m):
        method, _props, _body = ch.basic_get("jobs")
        assert method is not None, "queue ran dry"
        log["got"] += 1
        if i == m // 2:
            ch.basic_nack(method.delivery_tag, requeue=False)
            log["nacked"] += 1
        else:
            ch.basic_ack(method.delivery_tag)
            log["acked"] += 1

    def on_message(c, method, _props, _body):
        log["delivered"] += 1
        c.basic_ack(method.delivery_tag)
        log["acked"] += 1

    tag = ch.basic_consume("jobs", on_message)
    while log["delivered"] < n - m:
        conn.process_data_events(time_limit=1)
    ch.basic_cancel(tag)
    method, _props, _body = ch.basic_get("empty")
    assert method is None
    log["get_empty"] += 1
    ch2 = conn.channel()
    try:
        ch2.exchange_declare("orders", "topic")
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 406, e
        log["channel_errors"] += 1
    conn.close()
    with open(path, "w") as f:
        json.dump(log, f)


if __name__ == "__main__":
    main()
