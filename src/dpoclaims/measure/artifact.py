"""What a cached measurement is: an artifact that writes itself into a cache entry's directory and
reads itself back from one, without running code (JSON and safetensors, never pickle).

The four measurements of :class:`dpoclaims.measure.measurements.Measurements` are artifacts:
:class:`~dpoclaims.measure.capture.Capture`, :class:`~dpoclaims.measure.evaluation.Evaluation`,
:class:`~dpoclaims.measure.evaluation.PerplexityRows` and
:class:`~dpoclaims.measure.metrics.ContinuationF1`. Each names its cache kind and the format of
what it stores; the format is part of every cache key, so an entry written in an older format is
rebuilt, never misread.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

ArtifactT = TypeVar("ArtifactT", bound="Artifact")


class Artifact(Protocol):
    KIND: ClassVar[str]  # the cache kind its entries are stored under, e.g. "capture"
    FORMAT: ClassVar[int]  # bump when what ``save`` writes changes

    def save(self, directory: Path) -> None:
        """Write the artifact's files into ``directory`` (a cache entry being built)."""
        ...

    @classmethod
    def load(cls: type[ArtifactT], directory: Path) -> ArtifactT:
        """The artifact ``save`` wrote into ``directory``."""
        ...
