"""The calibration: planted organisms are what their constructions say, the truth tables name
claims of the paper table, and a small calibration on the tiny toy is never wrong where the truth
is known (the CI version of `dpoclaims calibrate`; the full one is benchmarks/bench_calibrate.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dpoclaims.cache import Cache
from dpoclaims.calibration.organisms import (
    GELU_MIN,
    ORGANISMS,
    TRUTHS,
    PlantingError,
    gelu_new,
    inverse_gelu_new,
    is_wrong,
    organism,
)
from dpoclaims.calibration.report import cell_claims, write_calibration, wrong_rate_upper
from dpoclaims.calibration.run import CalibrationSettings, calibrate, planted
from dpoclaims.claims import paper
from dpoclaims.claims.editing import edit_intervention
from dpoclaims.errors import OptionError
from dpoclaims.hooks.interventions import Intervention

SMALL = CalibrationSettings(replications=1, prompts=10, texts=8, search_examples=1)


def test_every_truth_names_a_cell_and_a_verdict():
    cells = set(cell_claims())
    for kind in ORGANISMS.values():
        assert kind.undetermined and kind.construction
        for claim, determined in kind.truth.items():
            assert claim in cells, f"{kind.name}: {claim} is no claim test of the paper table"
            assert determined.truth in TRUTHS and determined.reason


def test_a_wrong_verdict_is_a_definite_one_against_the_truth():
    assert is_wrong("replicates", "contradicts") and is_wrong("contradicts", "replicates")
    assert is_wrong("replicates", "inconclusive") and is_wrong("contradicts", "inconclusive")
    for verdict in ("inconclusive", "not measurable", "not tested"):
        assert not any(is_wrong(verdict, truth) for truth in TRUTHS)
    assert not is_wrong("replicates", None) and not is_wrong("replicates", "replicates")


def test_the_wrong_rate_bound_is_clopper_pearson():
    assert wrong_rate_upper(0, 20) == pytest.approx(1 - 0.05 ** (1 / 20))  # 13.9%
    assert wrong_rate_upper(20, 20) == 1.0


def test_inverse_gelu_new_gives_the_constant():
    values = np.array([GELU_MIN * 0.999, -0.1, -1e-4, 0.0, 1e-3, 0.3, 2.5])
    assert np.allclose(gelu_new(inverse_gelu_new(values)), values, rtol=0, atol=1e-12)
    with pytest.raises(PlantingError):
        inverse_gelu_new(np.array([GELU_MIN - 0.01]))


def test_bad_settings_and_names_are_refused():
    with pytest.raises(OptionError, match="replications"):
        CalibrationSettings(replications=0)
    with pytest.raises(OptionError, match="prompts"):
        CalibrationSettings(prompts=4)
    with pytest.raises(PlantingError, match="planted-nul"):
        organism("planted-nul")


def _logits(model, tokenizer, texts):
    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out.append(model(ids).logits)
    return out


def test_the_planted_ablation_is_the_ablation_of_its_neurons(tiny_toy_dir, tmp_path):
    with planted("planted-ablation", 5, SMALL, str(tiny_toy_dir), Cache(tmp_path)) as (m, record):
        pair = m.pair
        ablation = Intervention("ablate", tuple(record["silenced"]))
        assert record["silenced"], "nothing silenced"
        with ablation.applied(pair.base, pair.layout) as ablated:
            expected = _logits(ablated, pair.tokenizer, m.prompts[:4])
        for got, want in zip(_logits(pair.dpo, pair.tokenizer, m.prompts[:4]), expected):
            assert torch.equal(got, want)  # exactly: the silenced neurons write 0 either way


def test_the_planted_edit_is_the_edit_at_every_position(tiny_toy_dir, tmp_path):
    from dpoclaims.calibration.organisms import PLANTED_EDIT

    with planted("planted-edit", 5, SMALL, str(tiny_toy_dir), Cache(tmp_path)) as (m, _):
        pair = m.pair
        edit = edit_intervention(m.decomposition.cosines, m.decomposition.mean_base, PLANTED_EDIT)
        with edit.at("every").applied(pair.base, pair.layout) as edited:
            expected = _logits(edited, pair.tokenizer, m.prompts[:4])
        unedited = _logits(pair.base, pair.tokenizer, m.prompts[:4])
        for got, want, base in zip(_logits(pair.dpo, pair.tokenizer, m.prompts[:4]), expected, unedited):
            assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
            assert not torch.allclose(got, base, atol=1e-4)  # and the edit does something


def test_the_planted_null_is_the_base_and_noise(tiny_toy_dir, tmp_path):
    with planted("planted-null", 5, SMALL, str(tiny_toy_dir), Cache(tmp_path)) as (m, _):
        base, dpo = m.pair.base.state_dict(), m.pair.dpo.state_dict()
        changed = [name for name in base if not torch.equal(base[name], dpo[name])]
        assert changed
        for name in changed:
            assert torch.allclose(dpo[name], base[name], rtol=0, atol=1e-5 * float(base[name].std()) + 1e-12)


def test_the_planted_diffuse_has_the_papers_shares(tiny_toy_dir, tmp_path):
    with planted("planted-diffuse", 5, SMALL, str(tiny_toy_dir), Cache(tmp_path)) as (_, record):
        assert record["planted_shares"] == pytest.approx(paper.GROUP_SHARES, abs=1e-4)
        assert record["planted_net_over_gross"] == pytest.approx(0.3)
        assert record["n_scaled"] + record["n_set_constant"] > 0


@pytest.fixture(scope="module")
def small_calibration(tiny_toy_dir, tmp_path_factory):
    cache = Cache(tmp_path_factory.mktemp("calibration_cache"))
    replications, facts = calibrate(SMALL, cache, workers=1, toy_dir=tiny_toy_dir)
    out = tmp_path_factory.mktemp("calibration_reports")
    return replications, facts, write_calibration(out, replications, facts), out


def test_a_small_calibration_is_never_wrong_where_the_truth_is_known(small_calibration):
    replications, _, summary, _ = small_calibration
    assert {r.organism for r in replications} == set(ORGANISMS)
    assert not summary["errors"], summary["errors"]
    assert summary["determined_cells"] == sum(len(kind.truth) for kind in ORGANISMS.values())
    assert summary["met"], summary["cells_over_goal"]
    for record in replications:
        assert set(record.verdicts) == set(cell_claims())


def test_the_calibration_files_hold_the_cells(small_calibration):
    _, _, _, out = small_calibration
    data = json.loads((out / "calibration.json").read_text())
    assert len(data["cells"]) == len(cell_claims()) * len(ORGANISMS)
    for cell in data["cells"]:
        assert {"claim", "organism", "truth", "replications", "counts", "wrong_rate"} <= set(cell)
        assert sum(cell["counts"].values()) == cell["replications"] == 1
    text = (out / "calibration.md").read_text()
    assert "Goal: a definite wrong verdict" in text and "planted-diffuse" in text
    assert (out / "calibration.png").stat().st_size > 10_000


def test_calibrate_is_a_command(tmp_path):
    from dpoclaims.cli import build_parser

    args = build_parser().parse_args(["calibrate", "--replications", "3", "--reports-dir", str(tmp_path)])
    assert args.replications == 3 and args.func.__name__ == "cmd_calibrate"


def test_a_claim_on_what_dpo_lowered_is_not_measurable_where_dpo_lowered_nothing(tiny_toy_dir, tmp_path):
    """The rule the calibration found: the decomposition's shares of a DPO side that changed the
    weights by noise alone replicated; a claim that describes DPO's reduction now needs the drop."""
    from dpoclaims.claims.registry import run_claim

    with planted("planted-null", 5, SMALL, str(tiny_toy_dir), Cache(tmp_path)) as (m, _):
        for key, param in (
            ("C4", "four-groups"),
            ("C5", "TP-"),
            ("C9", None),
            ("C11[toxic-activation]", None),
        ):
            assert paper.entry(key).describes_the_drop
            result = run_claim(key, m, param)
            assert result.verdict == "not measurable", (key, result.verdict)
            assert "DPO's toxicity drop" in result.finding


@pytest.mark.parametrize("name", ["planted-null", "planted-diffuse"])
def test_the_calibrations_shortcut_gives_run_claims_verdict(tiny_toy_dir, tmp_path, name):
    """Where DPO's drop is not shown positive, the calibration records the drop-describing claims
    as not measurable without computing them; run_claim gives the same verdict."""
    from dpoclaims.calibration.run import drop_not_shown
    from dpoclaims.claims.registry import dpo_drop, run_claim

    with planted(name, 5, SMALL, str(tiny_toy_dir), Cache(tmp_path)) as (m, _):
        shortcut = drop_not_shown(dpo_drop(m))
        for entry in paper.ENTRIES:
            if entry.describes_the_drop:
                for param in entry.params or (None,):
                    verdict = run_claim(entry.key, m, param).verdict
                    assert (verdict == "not measurable") or not shortcut, (entry.key, param, verdict)
