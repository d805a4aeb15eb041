"""The production broker configuration, attacked: a real Mosquitto with TLS, a password file and the ACL.

Each "never arrives" is proved without waiting for a timeout: the forbidden message is sent first and
an allowed one after it on the same connection; Mosquitto delivers a client's messages to a subscriber
in order, so once the allowed one is in, the forbidden one would already have been received.
"""

from __future__ import annotations

import json
import queue
import re
import socket
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from device.core import contract
from device.core.errors import ContractError
from device.fleet import provision
from tests.deploy.conftest import DEPLOY, SecureBroker, make_certs
from tests.deploy.mqtt_client import WAIT_S, TestClient

RESULTS_SHARED = contract.shared(contract.ALL_RESULTS)


def password(bundle: Path) -> str:
    return (bundle / provision.SECRET_NAME).read_text().strip()


@pytest.fixture
def world(secure_broker: SecureBroker, tmp_path):
    """The broker with devices pi-a and pi-b and the ingest account; clients are closed afterwards."""
    out = tmp_path / "bundles"
    secure_broker.add_device("pi-a", out)
    secure_broker.add_device("pi-b", out)
    ingest_password = ingest_password_ = secure_broker.add_ingest(out)
    clients: list[TestClient] = []

    class World:
        broker = secure_broker
        bundles = out
        ingest_password = ingest_password_

        @staticmethod
        def device(device_id: str, *, secret: str | None = None, client_id: str | None = None) -> TestClient:
            c = TestClient(
                secure_broker.tls_port, username=device_id, password=secret or password(out / device_id),
                ca=secure_broker.ca, client_id=client_id or device_id,
            )  # fmt: skip
            clients.append(c)
            return c

        @staticmethod
        def ingest(client_id: str = "svc.ingest.1") -> TestClient:
            # the ingest workers use the loopback listener, with their own account
            c = TestClient(secure_broker.port, username="svc.ingest", password=ingest_password, client_id=client_id)
            clients.append(c)
            return c

    yield World
    for c in clients:
        c.close()


def connected(client: TestClient) -> TestClient:
    reason = client.connect()
    assert not reason.is_failure, f"connection refused: {reason}"
    return client


def test_it_refuses_a_wrong_password(world):
    reason = world.device("pi-a", secret="not-the-password").connect()
    assert reason.is_failure
    assert "password" in str(reason).lower() or "authori" in str(reason).lower()


def test_it_refuses_a_known_device_on_another_devices_password(world):
    reason = world.device("pi-a", secret=password(world.bundles / "pi-b")).connect()
    assert reason.is_failure


@pytest.mark.parametrize("listener", ["tls", "loopback"])
def test_it_refuses_anonymous_clients(world, listener):
    if listener == "tls":
        client = TestClient(world.broker.tls_port, ca=world.broker.ca)
    else:
        client = TestClient(world.broker.port)
    try:
        assert client.connect().is_failure
    finally:
        client.close()


def test_a_device_cannot_publish_as_another_device(world):
    ingest = connected(world.ingest())
    assert not any(r.is_failure for r in ingest.subscribe(RESULTS_SHARED))
    a = connected(world.device("pi-a"))

    spoof = a.publish(contract.results_topic("pi-b"), b'{"spoofed": true}')
    assert spoof.is_failure, "the broker should answer an unauthorised publish with 'not authorized'"
    assert not a.publish(contract.results_topic("pi-a"), b'{"own": true}').is_failure

    got = ingest.wait_message(contract.results_topic("pi-a"))  # the spoof, had it passed, came first
    assert json.loads(got.payload) == {"own": True}


def test_a_device_cannot_take_over_another_devices_session(world):
    # Mosquitto drops an older connection when a new one brings the same client id; the device
    # listener therefore gives every device its user name as client id, whatever id it asks for.
    ingest = connected(world.ingest())
    ingest.subscribe(RESULTS_SHARED)
    a = connected(world.device("pi-a"))
    b = connected(world.device("pi-b", client_id="pi-a"))
    assert not a.publish(contract.results_topic("pi-a"), b"still here").is_failure
    assert ingest.wait_message(contract.results_topic("pi-a")).payload == b"still here"
    assert not a.disconnected.is_set(), "pi-b's connection took pi-a's session"
    assert not b.publish(contract.results_topic("pi-b"), b"b").is_failure  # b is itself, not pi-a
    assert ingest.wait_message(contract.results_topic("pi-b")).payload == b"b"


def test_device_credentials_cannot_connect_on_the_loopback_listener(world):
    # there client ids are not bound to user names: a device's password would otherwise let anyone on the
    # broker host connect with any client id, an ingest worker's included
    for device_id in ("pi-a", "pi-b"):
        for client_id in (device_id, "svc.ingest.1", "pi-b"):
            client = TestClient(world.broker.port, username=device_id, password=password(world.bundles / device_id),
                                client_id=client_id)  # fmt: skip
            try:
                assert client.connect().is_failure, (device_id, client_id)
            finally:
                client.close()


def test_the_ingest_account_cannot_connect_over_tls(world):
    # services live in passwd-services, which only the loopback listener reads
    client = TestClient(world.broker.tls_port, username="svc.ingest", password=world.ingest_password,
                        ca=world.broker.ca, client_id="svc.ingest.remote")  # fmt: skip
    try:
        assert client.connect().is_failure
    finally:
        client.close()


def test_no_device_credential_takes_the_ingest_workers_session(world):
    worker = connected(world.ingest("svc.ingest.1"))
    worker.subscribe(RESULTS_SHARED)
    # over TLS a device asking for the worker's client id gets its own (its user name)
    a = connected(world.device("pi-a", client_id="svc.ingest.1"))
    assert not a.publish(contract.results_topic("pi-a"), b"from-a").is_failure
    assert worker.wait_message(contract.results_topic("pi-a")).payload == b"from-a"
    assert not worker.disconnected.is_set(), "a device's connection took the ingest worker's session"
    # and no worker id can be a device's: the worker refuses an id a device could have
    for device_like in ("pi-a", "steth-ingest-host-1", "ingest-1"):
        with pytest.raises(ContractError):
            contract.check_worker_id(device_like)
    assert contract.check_worker_id("svc.ingest.1") == "svc.ingest.1"


def test_ingest_workers_sharing_an_account_keep_their_own_client_ids(world):
    first, second = connected(world.ingest("svc.ingest.1")), connected(world.ingest("svc.ingest.2"))
    first.subscribe(RESULTS_SHARED)
    second.subscribe(RESULTS_SHARED)
    a = connected(world.device("pi-a"))
    for i in range(4):
        assert not a.publish(contract.results_topic("pi-a"), f"{i}".encode()).is_failure
    assert not first.disconnected.is_set() and not second.disconnected.is_set()


def test_a_device_cannot_write_outside_its_topics_or_fake_a_status(world):
    ingest = connected(world.ingest())
    ingest.subscribe(contract.ALL_STATUS, RESULTS_SHARED)
    a = connected(world.device("pi-a"))
    for topic in (contract.status_topic("pi-b"), "steth/v1/devices/pi-a/commands", "something/else"):
        assert a.publish(topic, b"x").is_failure, topic
    assert not a.publish(contract.results_topic("pi-a"), b"marker").is_failure
    assert ingest.wait_message(contract.results_topic("pi-a")).payload == b"marker"


def test_a_device_cannot_read_another_devices_commands(world):
    b = connected(world.device("pi-b"))
    b.subscribe(contract.commands_topic("pi-b"))
    a = connected(world.device("pi-a"))
    # Mosquitto accepts any subscription, but delivers only what the ACL lets the client read.
    a.subscribe(
        contract.commands_topic("pi-b"),
        f"{contract.TOPIC_ROOT}/+/commands",
        "$share/sneaky/steth/v1/devices/+/commands",
        contract.ALL_RESULTS,
        "#",
    )
    ingest = connected(world.ingest())
    assert not ingest.publish(contract.commands_topic("pi-b"), b"for-b").is_failure
    assert not ingest.publish(contract.commands_topic("pi-a"), b"for-a").is_failure

    assert b.wait_message(contract.commands_topic("pi-b")).payload == b"for-b"
    # a's own command arrives (once per matching subscription); b's never does
    first = a.wait_message(contract.commands_topic("pi-a"))
    assert first.payload == b"for-a"
    while True:
        try:
            extra = a.messages.get_nowait()
        except queue.Empty:
            break
        assert extra.topic == contract.commands_topic("pi-a")


def test_a_device_cannot_read_other_devices_results(world):
    a = connected(world.device("pi-a"))
    a.subscribe(contract.ALL_RESULTS, contract.results_topic("pi-b"))
    b = connected(world.device("pi-b"))
    assert not b.publish(contract.results_topic("pi-b"), b"b-result").is_failure
    # an allowed message to a after b's result: a command from the dashboard
    a.subscribe(contract.commands_topic("pi-a"))
    ingest = connected(world.ingest())
    ingest.publish(contract.commands_topic("pi-a"), b"marker")
    assert a.wait_message(contract.commands_topic("pi-a")).payload == b"marker"


def test_a_device_reads_only_its_own_acks_and_cannot_publish_any(world):
    ingest = connected(world.ingest())
    b = connected(world.device("pi-b"))
    b.subscribe(contract.acks_topic("pi-b"))
    a = connected(world.device("pi-a"))
    a.subscribe(contract.acks_topic("pi-b"), f"{contract.TOPIC_ROOT}/+/acks", contract.acks_topic("pi-a"))
    # a device faking an ack, for another device or for itself, is refused
    for topic in (contract.acks_topic("pi-b"), contract.acks_topic("pi-a")):
        assert a.publish(topic, b"fake-ack").is_failure, topic
    # ingest may write every device's acks: b's first, then a's own as the marker
    assert not ingest.publish(contract.acks_topic("pi-b"), b"ack-for-b").is_failure
    assert not ingest.publish(contract.acks_topic("pi-a"), b"ack-for-a").is_failure
    assert b.wait_message(contract.acks_topic("pi-b")).payload == b"ack-for-b"
    assert a.wait_message(contract.acks_topic("pi-a")).payload == b"ack-for-a"  # b's, had it passed, came first
    while True:  # a's own ack again (two of its subscriptions match it); never b's, never a fake
        try:
            extra = a.messages.get_nowait()
        except queue.Empty:
            break
        assert (extra.topic, extra.payload) == (contract.acks_topic("pi-a"), b"ack-for-a")


def test_the_ingest_account_receives_results_status_and_audio_through_shared_subscriptions(world):
    w1 = connected(world.ingest("svc.ingest.1"))
    w2 = connected(world.ingest("svc.ingest.2"))
    for w in (w1, w2):
        reasons = w.subscribe(RESULTS_SHARED, contract.shared(contract.ALL_AUDIO), contract.ALL_STATUS)
        assert not any(r.is_failure for r in reasons), reasons
    a = connected(world.device("pi-a"))
    n = 10
    for i in range(n):
        assert not a.publish(contract.results_topic("pi-a"), f"r{i}".encode()).is_failure
    assert not a.publish(contract.audio_topic("pi-a", "0b7f3c1e-8a53-4f7e-9d1c-2f6a4b5c6d7e"), b"fLaC").is_failure
    assert not a.publish(contract.status_topic("pi-a"), b"online", retain=True).is_failure

    got: list[str] = []
    statuses = 0
    while len(got) < n + 1 or statuses < 2:
        for w in (w1, w2):
            try:
                m = w.messages.get(timeout=0.05)
            except queue.Empty:
                continue
            if m.topic == contract.status_topic("pi-a"):
                statuses += 1  # status is not shared: every worker sees it
            else:
                got.append(m.payload.decode())
    # each shared message went to exactly one of the two workers
    assert sorted(got) == sorted([f"r{i}" for i in range(n)] + ["fLaC"])


def test_a_revoked_device_is_disconnected_and_refused_after_the_broker_reloads(world):
    world.broker.add_device("pi-c", world.bundles)
    c = connected(world.device("pi-c"))
    assert provision.revoke("pi-c", world.broker.files, pid_file=world.broker.pid_file)
    assert c.disconnected.wait(WAIT_S), "the broker kept a revoked device connected after reloading"
    c.close()
    again = world.device("pi-c")
    assert again.connect().is_failure
    # the others are untouched
    connected(world.device("pi-a"))


def test_rotating_a_devices_credentials_refuses_the_old_password(world):
    old = password(world.bundles / "pi-a")
    spec = provision.BundleSpec("pi-a", world.broker.tls_url, install_dir=world.bundles / "pi-a", use_credential=False)
    provision.provision_device(spec, world.broker.files, world.bundles, rotate=True, pid_file=world.broker.pid_file)
    new = password(world.bundles / "pi-a")
    assert new != old
    assert world.device("pi-a", secret=old).connect().is_failure
    connected(world.device("pi-a", secret=new))


def test_plain_mqtt_to_the_tls_port_gets_no_answer(world):
    client = TestClient(world.broker.tls_port, username="pi-a", password=password(world.bundles / "pi-a"))
    try:
        with pytest.raises((ConnectionError, OSError)):
            reason = client.connect()
            pytest.fail(f"a plaintext CONNECT got a CONNACK from the TLS listener: {reason}")
    finally:
        client.close()


def test_the_tls_port_refuses_tls_1_1(world):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(world.broker.ca)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let our side offer TLS 1.1, so the refusal is the broker's
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(("127.0.0.1", world.broker.tls_port), timeout=WAIT_S) as raw,
        pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"),
    ):
        ctx.wrap_socket(raw, server_hostname="localhost")
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", world.broker.tls_port), timeout=WAIT_S) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.2"


def test_a_device_trusting_another_ca_refuses_the_broker(world, tmp_path):
    other = tmp_path / "other-ca"
    make_certs(other, "localhost")
    client = world.device("pi-a")
    client.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.client.tls_set(ca_certs=str(other / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        client.client.connect("localhost", world.broker.tls_port)


def test_the_production_config_has_no_plaintext_listener_beyond_loopback():
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    blocks = re.split(r"^(?=listener )", text, flags=re.MULTILINE)
    header, listeners = blocks[0], blocks[1:]
    # each listener its own accounts: devices on TLS, services on loopback
    assert re.search(r"^per_listener_settings true$", header, re.MULTILINE)
    assert len(listeners) == 2
    for block in listeners:
        words = block.split()
        assert re.search(r"^allow_anonymous false$", block, re.MULTILINE), block
        assert re.search(r"^acl_file /etc/mosquitto/steth/acl$", block, re.MULTILINE), block
        tls = "certfile" in words and "keyfile" in words
        if tls:
            assert "tls_version tlsv1.2" in block
            assert re.search(r"^use_username_as_clientid true$", block, re.MULTILINE)
            assert re.search(r"^password_file /etc/mosquitto/steth/passwd$", block, re.MULTILINE)
        else:
            assert words[2] in ("127.0.0.1", "::1"), f"a plaintext listener open beyond loopback: {block!r}"
            assert re.search(r"^password_file /etc/mosquitto/steth/passwd-services$", block, re.MULTILINE)
