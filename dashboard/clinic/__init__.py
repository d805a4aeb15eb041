"""Clinics, devices, results, recordings, reviews and dead letters, and who may see which."""
