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


class TextFileError(CheckpointError):
    """A text file (prompts, texts, DPO pairs, a spec) that is not text in an encoding it can be
    read in, or that holds NUL or other control characters a model would be fed."""


class MissingDownload(CheckpointError):
    """An optional download the user has not provided (the paper pair without its files, a hub
    model not in the local cache while offline). The claims suite skips on this error alone:
    every other error about a file that was given turns the run red."""


class UnknownSourceError(CheckpointError):
    """A model source that is neither an existing path nor plausibly a hub id."""


class ConfigWeightsMismatchError(CheckpointError):
    """A model directory whose config.json does not describe the weights stored beside it."""


class NonFiniteWeightsError(CheckpointError):
    """A model with NaN or infinite weights."""


class DegenerateProbeError(CheckpointError):
    """A probe that is all zeros or not finite: it defines no direction."""


class IdenticalModelsError(PairMismatchError):
    """A DPO side whose weights all equal its base's: there is no fine-tune to study."""


class ContextWindowError(PairMismatchError):
    """A model whose positions cannot hold what a measurement feeds it (a prompt and its
    continuation, a perplexity window)."""


class TooFewPromptsError(DpoclaimsError):
    """A prompt set with fewer usable (non-empty) prompts than the claims' statistics need."""


class BridgeMismatchError(DpoclaimsError):
    """TransformerBridge computes something else than the plain Hugging Face model it wraps
    (a TransformerLens/transformers combination that does not work together)."""


class BrokenOrganismError(DpoclaimsError):
    """A built organism (the toy) is outside the bands of the setting it must reproduce."""
