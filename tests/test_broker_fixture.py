from __future__ import annotations

import paho.mqtt.client as mqtt


def test_the_test_broker_accepts_and_delivers(mqtt_broker):
    got: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="s")
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.connect("127.0.0.1", mqtt_broker.port)
    sub.subscribe("t", qos=1)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="p")
    pub.connect("127.0.0.1", mqtt_broker.port)
    pub.loop_start()
    import time

    time.sleep(0.3)
    pub.publish("t", b"hello", qos=1).wait_for_publish(5)
    for _ in range(50):
        if got:
            break
        time.sleep(0.05)
    pub.loop_stop()
    sub.loop_stop()
    assert got == [b"hello"]
