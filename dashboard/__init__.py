"""The clinicians' dashboard (Django) and its MQTT ingest worker.

Apps by domain: ``clinic`` (what is stored: clinics, devices, results, recordings, reviews, dead
letters, and the rules about who sees what), ``ingest`` (the MQTT worker), ``front`` (the pages).
"""
