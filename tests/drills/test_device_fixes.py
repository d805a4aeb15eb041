"""Device fixes the drills led to, each proved on its own with a real broker."""

from __future__ import annotations

import socket

import pytest

from device.edge.config import BrokerConfig
from device.edge.outbox import Entry, Outbox
from device.edge.publisher import Publisher
from tests.device.outbox_support import Subscriber, make_result

pytestmark = pytest.mark.drill


def test_a_result_whose_link_breaks_as_it_is_sent_stays_in_flight_and_goes_after_the_reconnect(mqtt_broker, tmp_path):
    """Seen in the system drill: publish() answering CONN_LOST held the result for a minute and then
    sent it twice. paho keeps a QoS 1 message it could not write and resends it after the reconnect."""
    box = Outbox(tmp_path / "outbox.sqlite", tmp_path / "audio", 16 * 1024 * 1024)
    config = BrokerConfig(url=mqtt_broker.url, reconnect_min_s=0.1, reconnect_max_s=0.3)
    publisher = Publisher(config, "pi-test", box, announce=False)
    ingest = Subscriber(mqtt_broker.port)  # plays ingest: acknowledges what it receives
    try:
        assert publisher.drain(20)  # connected, nothing waiting
        result = make_result()
        box.add([Entry(result)])
        sock = publisher._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_WR)  # the link breaks under the write
        publisher._next_poll = 0.0
        publisher._fill()
        assert [p.result_id for p in publisher._inflight.values()] == [result["result_id"]]
        assert not publisher._held, "held back as if the broker had refused it"
        assert publisher.drain(30), "not delivered after the reconnect"
        assert box.stats().delivered_results == 1 and box.stats().pending_results == 0
    finally:
        ingest.close()
        publisher.close()
        box.close()
