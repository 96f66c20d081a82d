"""Probes: the probe file of a pair."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tiny import D_MODEL

from bad_inputs.bench import Bench, Case, catalogue_test, registrar
from dpoclaims.errors import CheckpointError, DegenerateProbeError, PairMismatchError

CASES: list[Case] = []
case = registrar(CASES)


@case(
    "probe-of-another-size--refused-naming-d-model",
    "error",
    PairMismatchError,
    rf"probe\.pt' has {D_MODEL + 3} entries \(shape \({D_MODEL + 3},\)\); the models have d_model = {D_MODEL}",
)
def probe_of_another_size(b: Bench):
    b.load(b.spec(probe=str(b.probe(torch.randn(D_MODEL + 3)))))


@case(
    "probe-with-a-nan--refused-as-no-direction",
    "error",
    DegenerateProbeError,
    rf"probe\.pt' has 1 of {D_MODEL} entries NaN or infinite: it defines no direction",
)
def probe_with_a_nan(b: Bench):
    probe = torch.randn(D_MODEL)
    probe[7] = float("nan")
    b.load(b.spec(probe=str(b.probe(probe))))


@case(
    "probe-all-zeros--refused-as-no-direction",
    "error",
    DegenerateProbeError,
    r"probe\.pt' is all zeros: it defines no direction; retrain the probe",
)
def probe_all_zeros(b: Bench):
    b.load(b.spec(probe=str(b.probe(torch.zeros(D_MODEL)))))


@case(
    "probe-a-list--refused-saying-save-a-tensor",
    "error",
    CheckpointError,
    r"probe\.pt' holds a list, not a tensor: save the probe direction itself",
)
def probe_a_list(b: Bench):
    b.load(b.spec(probe=str(b.probe([1.0] * D_MODEL))))


@case(
    "probe-corrupt--refused-as-not-a-torch-file",
    "error",
    CheckpointError,
    r"cannot read probe .*probe\.pt \(corrupt, or not a plain torch file\)",
)
def probe_corrupt(b: Bench):
    (b.tmp / "probe.pt").write_bytes(b"\x00not a torch file" * 20)
    b.load(b.spec(probe=str(b.tmp / "probe.pt")))


@case("probe-norm-overflowing-float32--rescaled-same-direction", "recovery")
def probe_norm_overflowing_float32(b: Bench):
    from dpoclaims.models.pairs import load_probe

    reference = torch.load(b.files.probe, weights_only=True).reshape(-1).float()
    huge = b.probe(reference * 2.0**120)  # finite entries, a float32 norm of inf
    rescaled = load_probe(str(huge), D_MODEL)
    unit = reference / reference.norm()
    return {"unit probe": unit, "finite norm": True}, {
        "unit probe": rescaled / rescaled.norm(),
        "finite norm": bool(torch.isfinite(rescaled.norm())),
    }


@case(
    "probe-two-rows--refused-naming-both-shapes",
    "error",
    PairMismatchError,
    rf"probe .*probe\.pt' has {D_MODEL} entries \(shape \(2, {D_MODEL // 2}\)\); the models have d_model = "
    rf"{D_MODEL}, so a probe must have shape \({D_MODEL},\) or \(1, {D_MODEL}\)",
)
def probe_two_rows(b: Bench):
    b.load(b.spec(probe=str(b.probe(torch.randn(2, D_MODEL // 2)))))


@case("probe-a-row-or-a-linear-layer--loads-the-same-direction", "recovery")
def probe_a_row_or_a_linear_layer(b: Bench):
    from dpoclaims.models.pairs import load_probe

    reference = torch.randn(D_MODEL)
    row = load_probe(str(b.probe(reference.reshape(1, -1))), D_MODEL)
    layer = load_probe(str(b.probe({"weight": reference.reshape(1, -1), "bias": torch.zeros(1)})), D_MODEL)
    return {"row": reference, "linear layer": reference}, {"row": row, "linear layer": layer}


@case(
    "probe-a-column--refused-naming-the-shapes",
    "error",
    PairMismatchError,
    rf"shape \({D_MODEL}, 1\)\); .* must have shape \({D_MODEL},\) or \(1, {D_MODEL}\)",
)
def probe_a_column(b: Bench):
    b.load(b.spec(probe=str(b.probe(torch.randn(D_MODEL, 1)))))


# ---- a probe file that is not a tensor says what it is and what is expected

_EXPECTED = (
    rf"A probe is a file torch\.save wrote, holding a tensor of shape \({D_MODEL},\) or \(1, {D_MODEL}\) \(or a "
    r"dict with it under 'weight'\)"
)


def _written_probe(id: str, what: str, write: Any) -> None:
    @case(
        id,
        "error",
        CheckpointError,
        rf"cannot read probe .*probe\.pt \(corrupt, or not a plain torch file\): it is {what}.*, not a file "
        rf"torch\.save wrote\. {_EXPECTED}",
    )
    def written_probe(b: Bench):
        write(b.tmp / "probe.pt")
        b.load(b.spec(probe=str(b.tmp / "probe.pt")))


def _pickled(value: Any) -> Any:
    return lambda path: path.write_bytes(pickle.dumps(value))


_written_probe(
    "probe-a-python-pickle-of-a-tensor--refused-saying-what-it-is",
    r"a Python pickle \(written by pickle\.dump\) that needs torch\._utils\._rebuild_tensor_v2",
    _pickled(torch.randn(D_MODEL)),
)
_written_probe(
    "probe-a-python-pickle-of-numbers--refused-saying-what-it-is",
    r"a Python pickle \(written by pickle\.dump\) of plain values",
    _pickled([0.5] * D_MODEL),
)
_written_probe(
    "probe-a-numpy-npy-file--refused-saying-what-it-is",
    r"a NumPy \.npy file \(np\.save\)",
    lambda path: np.save(open(path, "wb"), np.ones(D_MODEL)),
)
_written_probe(
    "probe-a-safetensors-file--refused-saying-what-it-is",
    r"a safetensors file",
    lambda path: save_file({"weight": torch.ones(D_MODEL)}, str(path)),
)
_written_probe(
    "probe-a-text-file-of-numbers--refused-saying-what-it-is",
    r"a text file beginning '0\.1 0\.2 0\.3'",
    lambda path: path.write_text("0.1 0.2 0.3\n"),
)


@case(
    "probe-a-dict-without-weight--refused-listing-its-keys",
    "error",
    CheckpointError,
    r"probe .*probe\.pt' holds a dict with the keys \['direction', 'layer'\], not a tensor: save the probe direction "
    r"itself \(torch\.save\(tensor\)\) or a dict with it under 'weight'",
)
def probe_a_dict_without_weight(b: Bench):
    b.load(b.spec(probe=str(b.probe({"direction": torch.randn(D_MODEL), "layer": 3}))))


@case(
    "dpo-pt-a-python-pickle--refused-saying-what-it-is",
    "error",
    CheckpointError,
    r"cannot read state-dict file .*dpo\.pt \(corrupt, or not a plain torch file\): it is a Python pickle "
    r"\(written by pickle\.dump\) .*not a file torch\.save wrote\. A state-dict file is Lee et al\.'s dpo\.pt",
)
def dpo_pt_a_python_pickle(b: Bench):
    state = torch.load(b.files.dpo_pt, weights_only=True)
    (b.tmp / "dpo.pt").write_bytes(pickle.dumps(state))
    b.load(b.spec(dpo=str(b.tmp / "dpo.pt")))


test_case = catalogue_test(CASES)
