"""`manage.py ingest`: the MQTT ingest worker (run one or several; see dashboard/README.md)."""

from __future__ import annotations

import json
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.ingest.handlers import Ingestor
from dashboard.ingest.mqtt import BrokerConfig
from dashboard.ingest.worker import IngestWorker
from device.core.errors import ContractError


class Command(BaseCommand):
    help = "Subscribe to device results, recordings and status over MQTT and store them (runs until SIGTERM)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--client-id",
            help="MQTT client id of this worker's persistent session (default: STETH_MQTT_CLIENT_ID); "
            "each worker needs its own, and one no device could have (with a '.', e.g. svc.ingest.host-1)",
        )
        parser.add_argument("--url", help="broker URL (default: STETH_MQTT_URL)")

    def handle(self, *args: Any, **options: Any) -> None:
        config = BrokerConfig.from_settings(client_id=options["client_id"])
        if options["url"]:
            config = BrokerConfig.from_url(
                options["url"], **{k: v for k, v in vars(config).items() if k not in ("host", "port", "tls")}
            )
        ingestor = Ingestor(
            client_id=config.client_id,
            auto_register=settings.STETH_INGEST_AUTO_REGISTER,
            max_audio_bytes=settings.STETH_MAX_AUDIO_BYTES,
        )
        try:
            worker = IngestWorker(
                config,
                ingestor,
                max_backoff_s=settings.STETH_INGEST_MAX_BACKOFF_S,
                batch_size=settings.STETH_INGEST_BATCH_SIZE,
            )
        except ContractError as exc:  # a client id a device could have (see contract.check_worker_id)
            raise CommandError(str(exc)) from exc
        signal.signal(signal.SIGTERM, worker.request_stop)
        signal.signal(signal.SIGINT, worker.request_stop)
        stats = worker.run()
        self.stdout.write(f"ingest stats: {json.dumps(stats, sort_keys=True)}")
