"""The MQTT ingest worker: results, recordings and device status from the broker into the database."""
