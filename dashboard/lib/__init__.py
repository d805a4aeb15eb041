"""Plain helpers with no Django models: environment parsing, logging, backoff, security headers."""
