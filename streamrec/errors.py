"""The package's one root exception, so callers can catch everything streamrec raises on purpose."""


class StreamrecError(Exception):
    """Base class: every error streamrec raises deliberately. Messages say what to do."""


class ConfigError(StreamrecError):
    """Settings or command-line input that cannot work."""


class CheckpointError(StreamrecError):
    """A checkpoint that is missing, truncated, altered or from an incompatible version."""
