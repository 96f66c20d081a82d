"""The versions of the libraries that shape the project's numbers.

A built artifact (the toy organism, a measurement) is keyed by the versions of the libraries
that computed it, so that an entry made under other releases is rebuilt rather than mixed with
current ones: a release can change a number without changing any input (transformers 5.24
changed the toy's DPO through TransformerBridge's cached generation). Versions are read from
the installed distributions' metadata, without importing them.
A leaf: it imports nothing of the project.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# What computes a model's forward passes, generation and tokenization: every measurement.
MODEL_LIBRARIES = ("torch", "transformers", "tokenizers")
# What scores toxicity (profanity-check's model is a scikit-learn pipeline).
SCORER_LIBRARIES = ("alt-profanity-check", "scikit-learn")
# What the toy organism's build runs besides those: DPO (trl, and accelerate under it), the probe
# (scikit-learn) and numpy everywhere. TransformerLens is not among them: nothing the project
# measures or builds runs through TransformerBridge.
BUILD_LIBRARIES = ("trl", "accelerate", "numpy")
# Everything a user would name when a run goes wrong.
REPORTED_LIBRARIES = (*MODEL_LIBRARIES, "trl", "transformer-lens", "accelerate")


def library_version(name: str) -> str:
    """The installed version of distribution ``name``, or ``"absent"``."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    return {name: library_version(name) for name in names}


def measurement_versions() -> dict[str, str]:
    """The versions a measurement (a capture, an evaluation, a perplexity) depends on."""
    return library_versions(MODEL_LIBRARIES + SCORER_LIBRARIES)


def build_versions() -> dict[str, str]:
    """The versions a built organism depends on."""
    return library_versions(MODEL_LIBRARIES + SCORER_LIBRARIES + BUILD_LIBRARIES)


def versions_line(names: tuple[str, ...] = REPORTED_LIBRARIES) -> str:
    """``torch 2.13.0, transformers 5.24.0, ...`` for messages."""
    return ", ".join(f"{name} {library_version(name)}" for name in names)
