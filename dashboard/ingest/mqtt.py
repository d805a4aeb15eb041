"""The one seam to the MQTT broker (paho-mqtt 2.x, MQTT 5).

The ingest session is persistent: a fixed client id, ``clean_start=False`` and a session expiry, so
the broker queues QoS 1 messages while the worker is down. Acknowledgements are manual: the worker
acknowledges a message only after the database holds it (see worker.py).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from device.core import contract
from device.core.errors import StethError


class BrokerUnavailableError(StethError):
    """The broker cannot be reached or refused the connection."""


@dataclass(frozen=True)
class BrokerConfig:
    host: str
    port: int
    tls: bool
    client_id: str
    username: str = ""
    password: str = ""
    ca_file: str = ""
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 64

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> BrokerConfig:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(host=parts.hostname or "127.0.0.1", port=parts.port or (8883 if tls else 1883), tls=tls, **kwargs)

    @classmethod
    def from_settings(cls, **overrides: Any) -> BrokerConfig:
        from django.conf import settings

        values: dict[str, Any] = {
            "client_id": settings.STETH_MQTT_CLIENT_ID,
            "username": settings.STETH_MQTT_USERNAME,
            "password": settings.STETH_MQTT_PASSWORD,
            "ca_file": settings.STETH_MQTT_CA_FILE,
            "keepalive_s": settings.STETH_MQTT_KEEPALIVE_S,
            "session_expiry_s": settings.STETH_MQTT_SESSION_EXPIRY_S,
            "receive_maximum": settings.STETH_INGEST_RECEIVE_MAXIMUM,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_url(settings.STETH_MQTT_URL, **values)

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def subscriptions() -> list[tuple[str, SubscribeOptions]]:
    """Results and audio are shared among workers. Status is not: MQTT 5 never sends retained messages
    to a shared subscription, and every worker applying every status is harmless (latest wins)."""
    return [
        (contract.shared(contract.ALL_RESULTS), SubscribeOptions(qos=1)),
        (contract.shared(contract.ALL_REFUSED), SubscribeOptions(qos=1)),
        (contract.shared(contract.ALL_AUDIO), SubscribeOptions(qos=1)),
        # retain handling 1: retained statuses only on a new subscription, not on every reconnect
        (contract.ALL_STATUS, SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)),
    ]


def new_client(config: BrokerConfig) -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=config.client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=True,
    )
    if config.username:
        client.username_pw_set(config.username, config.password or None)
    if config.tls:
        client.tls_set(ca_certs=config.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
    return client


def connect(client: mqtt.Client, config: BrokerConfig) -> None:
    """Open the connection and send CONNECT (CONNACK arrives through the loop); raises BrokerUnavailableError."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = config.session_expiry_s
    props.ReceiveMaximum = config.receive_maximum
    try:
        client.connect(config.host, config.port, config.keepalive_s, clean_start=False, properties=props)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerUnavailableError(
            f"cannot reach the MQTT broker at {config.where}: {exc}", "check STETH_MQTT_URL and that the broker runs"
        ) from exc
