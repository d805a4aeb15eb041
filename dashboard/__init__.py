"""The clinicians' dashboard (Django) and its MQTT ingest worker."""
