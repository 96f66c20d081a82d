"""Errors raised by dpoclaims. Each says what is wrong and what to do about it."""


class DpoclaimsError(Exception):
    """Base class for every error this package raises on bad input."""


class UnknownPairError(DpoclaimsError):
    """A pair name that is neither registered nor a path to a pair spec file."""


class CheckpointError(DpoclaimsError):
    """A checkpoint (model directory, state-dict file or probe) that is missing or unreadable."""


class PairMismatchError(DpoclaimsError):
    """The two models of a pair, or a model and its probe, do not fit together."""


class CacheError(DpoclaimsError):
    """A cache entry that could not be written or built."""


class ReportError(DpoclaimsError):
    """A reports directory that cannot be created or written."""


class TrainingError(DpoclaimsError):
    """A training run that would produce a useless model (no weight changed, warm-up unfinished)."""


class OptionError(DpoclaimsError):
    """An unknown or invalid option value."""
