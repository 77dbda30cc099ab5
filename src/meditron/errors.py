"""User-facing errors: one line naming the problem and the fix; the CLI maps them to exit code 2."""

from __future__ import annotations


class MeditronError(Exception):
    """An error the user can cause and fix (bad path, bad config, malformed data, unsupported format)."""


class ModelError(MeditronError):
    """A model reference, its files, its config or its weights are unusable."""


class ConfigError(MeditronError):
    """A configuration file or override names a bad key or value."""


class DataError(MeditronError):
    """A data file or benchmark split is missing or malformed."""


class ContextLengthError(MeditronError):
    """A prompt does not fit in the model's context window."""
