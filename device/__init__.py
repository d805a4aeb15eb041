"""stethoscope-edge: the device side (signal pipeline, inference, delivery) and the shared contract."""

__version__ = "0.1.0"
