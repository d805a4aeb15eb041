"""The project's own exception types.

Every error a user can cause carries a message that says what is wrong and a hint that says what to do;
``str(err)`` gives both, so a CLI can print it as it is.
"""

from __future__ import annotations


class StethError(Exception):
    """Base class: something the user can act on."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class AudioError(StethError):
    """A recording cannot be used."""


class UnreadableAudioError(AudioError):
    """Not a file we can decode as audio (missing, not WAV/FLAC, corrupt)."""


class EmptyAudioError(AudioError):
    """Decodes, but holds no samples."""


class TooShortError(AudioError):
    """Shorter than one analysis window."""


class SilentAudioError(AudioError):
    """No signal: the stethoscope was not on the chest, or the input is muted."""


class ClippedAudioError(AudioError):
    """So much of the signal is at full scale that its shape is lost."""


class InvalidAudioError(AudioError):
    """Samples that are not numbers (NaN, infinity) or an impossible sample rate."""


class ConfigError(StethError):
    """A configuration file or setting is wrong."""


class BusyError(StethError):
    """Another process holds something this one needs (the device's delivery of its outbox)."""


class DatasetError(StethError):
    """A data folder is missing or not laid out as expected."""


class ContractError(StethError):
    """A message does not follow the MQTT contract."""

    def __init__(self, message: str, hint: str = "", errors: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.errors = errors or []


class ModelError(StethError):
    """A shipped or given model cannot be loaded or run."""
