"""The dpoclaims command line:

  build-toy    build (or reuse) the toy organism, check it against its bands, write its measurements
  build-pair   build (or reuse) the smollm2 pair (a real pretrained model and its DPO), check its bands
  info         load a pair and print its shape and fingerprint
  train-dpo    DPO-train a base model on Lee et al.-format pairs (TRL) and save a Hugging Face directory
  train-probe  fit a linear toxicity probe on a base model from a Jigsaw-style CSV
  sweep        run every claim on each cell of pairs x toy seeds x conventions x scorers, write the matrix
  replicate    the sweep over toy seeds (default 0 1 2)
  calibrate    every claim on the planted organisms (known truth) over replications: how often a verdict is wrong
  view         open (or serve) the latest report page, reports/index.html or a sweep's replication.html

dpoclaims COMMAND --help gives a command's options.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dpoclaims.cache import Cache
from dpoclaims.calibration import (
    DEFAULT_PROMPTS,
    DEFAULT_REPLICATIONS,
    DEFAULT_SEARCH_EXAMPLES,
    DEFAULT_TEXTS,
)
from dpoclaims.errors import DpoclaimsError, OptionError
from dpoclaims.files import (
    PICKLE_GLOBALS_ENV,
    PICKLE_GLOBALS_OPTION,
    atomic_torch_save,
    atomic_write_text,
    ensure_writable_dir,
    pickle_globals_allowed,
    refuse_output_over_inputs,
)
from dpoclaims.train.organism import DEFAULT_SEED

if TYPE_CHECKING:
    import torch


def _cache(args: argparse.Namespace) -> Cache:
    return Cache(args.cache_dir)


def _device(args: argparse.Namespace) -> torch.device:
    """The command's ``--device``, else its default (build-toy: the CPU; the others:
    $DPOCLAIMS_DEVICE, else auto). A bad value, or CUDA where there is none, is an
    :class:`OptionError` naming what is available."""
    from dpoclaims.devices import resolve_device

    return resolve_device(args.device if args.device is not None else args.default_device)


def _add_device(parser: argparse.ArgumentParser, default_help: str, default: str | None = None) -> None:
    """``--device``; ``default`` None: $DPOCLAIMS_DEVICE, else auto."""
    parser.add_argument(
        "--device", default=None, metavar="DEVICE", help=f"auto, cpu, cuda or cuda:N; {default_help}"
    )
    parser.set_defaults(default_device=default)


#: Seeds numpy and scikit-learn accept: 0 <= seed < 2**32.
MAX_SEED = 2**32 - 1


def _check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise OptionError(f"--seed must be a whole number from 0 to {MAX_SEED}, not {seed}")


def _check_output_file(path: Path, option: str) -> None:
    """An output file ``option`` names: refused, before any work, when it is a directory or its
    directory cannot be written."""
    if path.is_dir():
        raise OptionError(f"{option} {path} is a directory; name a file (e.g. {path / 'out.json'})")
    ensure_writable_dir(
        path.parent if str(path.parent) else Path("."),
        f"the directory of {option}",
        f"give {option} a path in a writable directory",
        OptionError,
    )


def _check_new_model_dir(out: Path) -> None:
    """``train-dpo --out``: refused before training when it is a file, or a directory holding
    files that are not an earlier train-dpo output (saving would overwrite them), or cannot be
    created where it is."""
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out {out} is a file; give a directory for the DPO model")
    if out.is_dir() and any(out.iterdir()) and not (out / "dpo_training.json").is_file():
        raise OptionError(
            f"--out {out} already holds files that dpoclaims train-dpo did not write; saving the model there "
            "would overwrite them. Give a new or empty directory"
        )
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise OptionError(f"--out {out} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK):
        raise OptionError(f"--out {out} cannot be created: {existing} is not writable")


def _print_bands(bands: dict[str, dict[str, Any]], *, width: int) -> bool:
    """One ``ok``/``FAIL`` line per band of a build report; whether every band is met."""
    for name, band in bands.items():
        print(
            f"  {'ok  ' if band['ok'] else 'FAIL'} {name:<{width}} {band['value']:.4f}  in [{band['band'][0]}, {band['band'][1]}]"
        )
    return all(band["ok"] for band in bands.values())


def cmd_build_toy(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from dpoclaims.train.organism.build import ToyConfig, ensure_toy, read_toy_report, toy_key

    _check_seed(args.seed)
    config = replace(ToyConfig(), seed=args.seed)
    device = _device(args)
    key = toy_key(config, device)
    if args.print_key:  # for a CI cache key: the key alone on stdout, nothing built or read
        print(key)
        return 0
    _check_output_file(Path(args.report), "--report")  # found now, not after minutes of building
    cache = _cache(args)
    if args.force:
        import shutil

        shutil.rmtree(cache.entry_dir("toy", key), ignore_errors=True)
    was_cached = cache.get("toy", key) is not None
    start = time.perf_counter()
    directory = ensure_toy(config, cache=cache, progress=not args.no_progress, device=device)
    elapsed = time.perf_counter() - start
    report = read_toy_report(directory)
    report["toy_dir"] = str(directory)
    atomic_write_text(Path(args.report), json.dumps(report, indent=1))
    print(
        f"toy organism: {directory}  ({elapsed:.1f} s{', from cache' if was_cached else ', built now'}"
        f" on {device})"
    )
    print(
        f"default scorer: {report['default_scorer']} (the toy's own lexicon: it knows the toy's toxic "
        "register exactly; profanity-check is the independent check)"
    )
    for scorer, values in report["toxicity"].items():
        print(f"  toxicity [{scorer:>15}]  base {values['base']:.3f}  DPO {values['dpo']:.3f}")
    print(
        f"  perplexity (held-out neutral)  base {report['perplexity']['base']:.3f}  DPO {report['perplexity']['dpo']:.3f}"
    )
    print(
        f"  min weight cosine  {report['min_weight_cosine']:.4f}   probe accuracy  {report['probe_accuracy']:.3f}"
    )
    rule = report.get("dpo_checkpoints")
    if rule:
        measured = [c["step"] for c in rule["measured"]]
        recipes = rule.get("recipes") or []
        others = [r for r in recipes if r["recipe"] != rule.get("recipe")]
        print(
            f"DPO model: the checkpoint at step {rule['kept_step']}"
            + (f" under the DPO recipe {rule['recipe']}" if "recipe" in rule else "")
            + ", "
            + (
                f"the first in every band of {len(measured)} measured (steps {measured[0]} to {measured[-1]})"
                if rule["in_band"]
                else f"the closest to the bands: none of {len(measured)} measured (steps {measured[0]} to "
                f"{measured[-1]}) met every band"
            )
            + "".join(
                f"; under {r['recipe']} none of {len(r['measured'])} checkpoints met every band"
                for r in others
            )
            + " (docs/toy.md, 'The setting')"
        )
    print("bands of the toy's setting (docs/toy.md, 'Bands'):")
    all_ok = _print_bands(report["bands"], width=24)
    print(f"build timings (s): {report['timings_s']}")
    print(f"report written to {args.report}")
    return 0 if all_ok else 1


def cmd_build_pair(args: argparse.Namespace) -> int:
    """Build (or reuse) a named pair that the project builds from installed files (smollm2)."""
    from dpoclaims.train.named_pairs import smollm2_seed
    from dpoclaims.train.smollm2 import (
        DEFAULT_DPO_SEED,
        STAGES,
        cached_stages,
        ensure_smollm2,
        seeded_config,
        stage_keys,
    )

    dpo_seed = DEFAULT_DPO_SEED if args.pair == "smollm2" else smollm2_seed(args.pair)
    if dpo_seed is None:
        raise OptionError(
            f"build-pair builds smollm2 or smollm2-seedN (its DPO stage at seed N; the toy: build-toy), not {args.pair!r}"
        )
    config = seeded_config(dpo_seed)
    args.report = args.report or f"reports/{args.pair}.json"
    if args.print_key:  # for a CI cache key: the last stage's key alone (it folds in the others)
        print(stage_keys(config)[STAGES[-1]])
        return 0
    _check_output_file(Path(args.report), "--report")
    cache = _cache(args)
    cached = cached_stages(cache, config)
    start = time.perf_counter()
    built = ensure_smollm2(config, cache=cache, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    report = built.report()
    report["directories"] = {
        "base": str(built.base),
        "data": str(built.data),
        "dpo": str(built.dpo),
        "pair": str(built.pair),
    }
    atomic_write_text(Path(args.report), json.dumps(report, indent=1))
    print(
        f"{args.pair} pair (DPO seed {dpo_seed}): {built.pair}  ({elapsed:.1f} s; stages from cache: {', '.join(cached) or 'none'})"
    )
    tox, ppl = report["toxicity"], report["perplexity"]

    def figure(value: dict[str, float]) -> str:
        return f"{value['value']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"

    print(
        f"  toxicity [{tox['scorer']}] on {report['n_challenge_prompts']} challenge prompts: base {figure(tox['base'])}  DPO {figure(tox['dpo'])}  drop {figure(tox['drop'])}"
    )
    print(
        f"  perplexity (held-out, {ppl['texts']} texts)  base {ppl['base']:.3f}  DPO {ppl['dpo']:.3f}  change {figure(ppl['increase'])}"
    )
    probes = report["data"]["probe"]
    agreement, grammar = probes["scorer"]["heldout"], probes["grammar"]

    def rate(value: float, interval: list[float]) -> str:
        return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"

    print(
        f"  probe (smollm2) agrees with profanity-check on {agreement['n']} held-out sampled continuations "
        f"({agreement['toxic']} rated toxic): balanced accuracy {rate(agreement['balanced_accuracy'], agreement['balanced_accuracy_interval'])}, "
        f"accuracy {rate(agreement['accuracy'], agreement['accuracy_interval'])} (goal 0.85)"
    )
    print(
        f"  grammar probe (smollm2-grammar-probe): accuracy {rate(grammar['accuracy'], grammar['accuracy_interval'])} on "
        f"{grammar['n_heldout']} held-out comments; on the same continuations balanced accuracy "
        f"{rate(grammar['scorer_heldout']['balanced_accuracy'], grammar['scorer_heldout']['balanced_accuracy_interval'])}"
    )
    challenge = report["data"]["challenge"]
    print(
        f"  challenge prompts: {challenge['kept']} of {challenge['pool_prompts_sampled']} pool prompts kept "
        f"({challenge['kept_share']:.1%}): at least 1 of k = {challenge['k']} samples rated toxic"
    )
    print("bands of the pair's setting (docs/real-pair.md, 'Bands'):")
    all_ok = _print_bands(report["bands"], width=26)
    print(f"stage times (s): {report['stage_seconds']}")
    print(f"report written to {args.report}")
    return 0 if all_ok else 1


def cmd_info(args: argparse.Namespace) -> int:
    from dpoclaims.train.named_pairs import load_pair

    device = _device(args)
    start = time.perf_counter()
    pair = load_pair(args.pair, cache=_cache(args), device=device)
    elapsed = time.perf_counter() - start
    # What the claims would feed the models must fit their positions (the default settings).
    from dpoclaims.measure.generation import GenerationSettings
    from dpoclaims.measure.measurements import check_context_window
    from dpoclaims.measure.prompts import pair_texts

    prompts = pair_texts(pair, "challenge_prompts") if "challenge_prompts" in pair.spec.extras else []
    check_context_window(pair, prompts, GenerationSettings())
    layout = pair.layout
    print(
        json.dumps(
            {
                "name": pair.name,
                "fingerprint": pair.fingerprint,
                "mlp": layout.kind,
                "n_layers": layout.n_layers,
                "d_model": layout.d_model,
                "d_mlp": layout.d_mlp,
                "n_neurons": layout.n_neurons,
                "device": str(device),
                "load_seconds": round(elapsed, 2),
                "extras": pair.spec.extras,
            },
            indent=1,
        )
    )
    return 0


def cmd_train_dpo(args: argparse.Namespace) -> int:
    from dpoclaims.train.dpo import DPOSettings, train_dpo_from_files

    if not 0 < args.val_fraction < 1:
        raise OptionError(f"--val-fraction must be between 0 and 1, not {args.val_fraction}")
    _check_seed(args.seed)
    # Every training setting is checked (finite, in range) before anything is read or written.
    settings = DPOSettings(
        beta=args.beta,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.max_epochs,
        eval_every=args.eval_every,
        patience=args.patience,
        warmup_steps=args.warmup_steps,
        max_length=args.max_length,
        optimizer=args.optimizer,
        seed=args.seed,
    )
    # Never write over what the run reads: --out may not be, or hold, the base or the pairs file.
    refuse_output_over_inputs(Path(args.out), "--out", {"--base": args.base, "--pairs": args.pairs})
    _check_new_model_dir(Path(args.out))
    _device(args)  # a bad --device fails before anything is read
    summary = train_dpo_from_files(
        args.base,
        Path(args.pairs),
        Path(args.out),
        settings,
        val_fraction=args.val_fraction,
        progress=not args.no_progress,
        device=_device(args),
    )
    dropped = summary["n_train"] - summary["n_train_used"] + summary["n_val"] - summary["n_val_used"]
    print(
        f"DPO model written to {args.out}: {summary['n_train']} training pairs, {summary['n_val']} validation"
        + (f" ({dropped} dropped: their prompt alone fills --max-length)" if dropped else "")
        + f"; {summary['steps']} of {summary['warmup_note']}"
    )
    if summary.get("n_duplicates"):
        print(
            f"  {summary['n_duplicates']} duplicate pairs in {args.pairs} dropped (each kept once), so that no "
            "validation pair is also a training pair"
        )
    print(
        f"  largest weight change {summary['largest_weight_change']:.3g} "
        f"({summary['largest_weight_change_tensor']})"
    )
    best = summary["best_eval_loss"]
    print(
        f"  validation loss {summary['end_val_loss']:.6g} at the end, {summary['start_val_loss']:.6g} at the start"
        + (f" (best during training {best:.6g})" if best is not None else " (no evaluation during training)")
    )
    return 0


def cmd_train_probe(args: argparse.Namespace) -> int:
    """Logistic-regression toxicity probe on the base's mean-pooled last-layer residual."""

    import math

    from dpoclaims.cache import file_sha256
    from dpoclaims.measure.data import read_jigsaw_csv, train_val_split
    from dpoclaims.measure.probe import train_probe
    from dpoclaims.models.loading import load_hf_model, load_tokenizer, mlp_layout

    if args.batch_size < 1 or args.max_tokens < 1:
        raise OptionError("--batch-size and --max-tokens must be positive")
    if not (math.isfinite(args.C) and args.C > 0):
        raise OptionError(
            f"--C (inverse regularisation strength) must be a positive, finite number, not {args.C}"
        )
    if not 0 <= args.val_fraction < 1:
        raise OptionError(f"--val-fraction must be in [0, 1), not {args.val_fraction}")
    _check_seed(args.seed)
    out = Path(args.out)
    sidecar = out.with_name(out.name + ".json")
    for written in (out, sidecar):
        refuse_output_over_inputs(written, "--out", {"--base": args.base, "--csv": args.csv})
    _check_output_file(out, "--out")
    device = _device(args)
    texts, labels = read_jigsaw_csv(args.csv)
    train, val = train_val_split(len(texts), args.val_fraction, args.seed, args.max_examples)
    if len({labels[i] for i in train}) < 2:
        raise DpoclaimsError(f"the training split of {args.csv} holds one class only; use more examples")
    tokenizer = load_tokenizer(args.base)
    model = load_hf_model(args.base)
    # cast: transformers wraps PreTrainedModel.to in functools.wraps(Module.to), which type
    # checkers read as an unbound Module.to; the call is the model's own .to (returning the model)
    cast("torch.nn.Module", model).to(device)
    layout = mlp_layout(model.config)
    d_model = layout.d_model
    n_ctx = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    max_tokens = min(args.max_tokens, int(n_ctx)) if n_ctx else args.max_tokens  # never past the positions
    chosen = train + val
    trained = train_probe(
        model,
        tokenizer,
        [texts[i] for i in chosen],
        [labels[i] for i in chosen],
        n_train=len(train),
        C=args.C,
        seed=args.seed,
        batch_size=args.batch_size,
        max_tokens=max_tokens,
        progress=not args.no_progress,
    )
    y_train, y_val = [labels[i] for i in train], [labels[i] for i in val]
    probe = trained.probe
    direction = probe.fitted_direction.detach().clone().float()

    def share(ys: list[int]) -> float | None:
        return round(sum(ys) / len(ys), 4) if ys else None

    val_share = share(y_val)  # None without a validation split (val empty)
    summary = {
        "base": args.base,
        "csv": str(args.csv),
        "csv_sha256": file_sha256(Path(args.csv)),
        "seed": args.seed,
        "n_examples": len(chosen),
        "n_train": len(train),
        "n_val": len(val),
        "d_model": d_model,
        "device": str(device),
        "hook": f"blocks.{layout.n_layers - 1}.hook_resid_post",
        "pooling": "mean over non-padding tokens",
        "max_tokens": max_tokens,
        "C": args.C,
        "bias": probe.bias,
        "toxic_share": {"all": share(y_train + y_val), "train": share(y_train), "val": share(y_val)},
        "train_accuracy": trained.train_accuracy,
        "val_accuracy": trained.heldout_accuracy if val else None,
        "val_majority_baseline": round(max(val_share, 1 - val_share), 4) if val_share is not None else None,
    }
    atomic_torch_save(out, direction)
    atomic_write_text(sidecar, json.dumps(summary, indent=1))
    balance = summary["toxic_share"]
    print(f"probe ({d_model} entries) written to {out}; details in {sidecar}")
    print(
        f"  examples {len(chosen)} (train {len(train)}, val {len(val)}); toxic share all {balance['all']}, "
        f"train {balance['train']}, val {balance['val']}"
    )
    val_text = (
        f"{summary['val_accuracy']:.3f} (majority baseline {summary['val_majority_baseline']:.3f})"
        if val
        else "n/a (--val-fraction 0)"
    )
    print(f"  accuracy train {summary['train_accuracy']:.3f}, val {val_text}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import shlex

    from dpoclaims.runs.cells import grid
    from dpoclaims.runs.replication import check_pytest_args
    from dpoclaims.runs.sweep import sweep

    try:
        pytest_args = shlex.split(args.pytest_args)
    except ValueError as exc:  # an unclosed quote
        raise OptionError(
            f"--pytest-args {args.pytest_args!r} cannot be split into arguments: {exc}"
        ) from None
    check_pytest_args(pytest_args)
    cells = grid(args.pairs, args.seeds, args.conventions, args.scorers or (None,))
    sweep(
        cells,
        cache=_cache(args),
        reports_dir=Path(args.reports_dir),
        engine=args.engine,
        claims_dir=Path(args.claims_dir) if args.claims_dir else None,
        max_prompts=args.max_prompts,
        pytest_args=pytest_args,
        address=args.address,
        cpus_per_cell=args.cpus_per_cell,
        gpus_per_cell=args.gpus_per_cell,
        max_retries=args.max_retries,
    )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Every claim on every planted organism over replications; writes reports/calibration.*;
    exits 1 when a determined cell is wrong in more than 5% of replications (or a replication failed)."""
    from dpoclaims.calibration.report import write_calibration
    from dpoclaims.calibration.run import CalibrationSettings, Replication, calibrate

    settings = CalibrationSettings(
        replications=args.replications,
        prompts=args.prompts,
        texts=args.texts,
        search_examples=args.search_examples,
        organisms=tuple(args.organisms) if args.organisms else CalibrationSettings().organisms,
        seed=args.seed,
    )

    def done(record: Replication, count: int, total: int) -> None:
        status = f"FAILED: {record.error}" if record.error else f"{record.seconds:.1f} s"
        print(f"[{count}/{total}] {record.organism} replication {record.replication}: {status}", flush=True)

    replications, facts = calibrate(settings, _cache(args), workers=args.workers, on_done=done)
    reports_dir = Path(args.reports_dir)
    result = write_calibration(reports_dir, replications, facts)
    print(
        f"calibration: {result['determined_cells']} determined cells, largest wrong rate "
        f"{(result['largest_wrong_rate'] or 0):.1%} (goal {result['goal_wrong_rate']:.0%}); "
        f"{facts['seconds'] / 60:.1f} min; written to {reports_dir / 'calibration.md'} (.json, .png)"
    )
    for cell in result["cells_over_goal"]:
        print(f"  over the goal: {cell}")
    for error in result["errors"]:
        print(f"  failed: {error}")
    return 0 if result["met"] else 1


def cmd_view(args: argparse.Namespace) -> int:
    """Open the latest report page in a browser, print where it is (``--no-browser``), or serve
    the reports directory on this machine (``--serve``: for a browser elsewhere, through a tunnel)."""
    from dpoclaims.report.page import PAGE_NAMES, latest_page

    reports_dir = Path(args.reports_dir or os.environ.get("DPOCLAIMS_REPORTS") or "reports").expanduser()
    page = latest_page(reports_dir)
    if page is None:
        raise OptionError(
            f"no report page in {reports_dir} (neither of {', '.join(PAGE_NAMES)}): run `pytest claims/` or "
            "`dpoclaims sweep` first, or name the directory with --reports-dir"
        )
    if args.serve:
        server = page_server(reports_dir, args.port)
        url = f"http://127.0.0.1:{server.server_address[1]}/{page.name}"
        print(f"serving {reports_dir} at {url} (Ctrl-C stops)", flush=True)
        if not args.no_browser:
            _open_in_browser(url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return 0
    print(page.resolve())
    if not args.no_browser and not _open_in_browser(page.resolve().as_uri()):
        print(
            "no browser could be started here: open the file above in one (or use --serve)", file=sys.stderr
        )
    return 0


def _open_in_browser(url: str) -> bool:
    import webbrowser

    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


def page_server(directory: Path, port: int) -> Any:
    """An HTTP server of ``directory`` on 127.0.0.1 (only this machine), not yet started; port 0
    picks a free one."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # one line per request: not wanted
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), partial(QuietHandler, directory=str(directory)))


def _allowing_pickle_globals(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """``command`` run with ``--allow-pickle-globals`` (and the environment's list) allowed for
    every ``weights_only`` checkpoint load inside it."""

    def run(args: argparse.Namespace) -> int:
        with pickle_globals_allowed(args.allow_pickle_globals):
            return command(args)

    return run


def _add_allow_pickle_globals(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        PICKLE_GLOBALS_OPTION,
        dest="allow_pickle_globals",
        default=None,
        metavar="NAMES",
        help="comma-separated, fully qualified pickle globals that checkpoints may use "
        f"(added to ${PICKLE_GLOBALS_ENV}; default none). Only for files you trust: unpickling them can run code",
    )


def _add_sweep_options(parser: argparse.ArgumentParser, default_seeds: list[int]) -> None:
    from dpoclaims.runs.sweep import ENGINES

    parser.add_argument(
        "--pairs",
        nargs="+",
        default=["toy"],
        metavar="PAIR",
        help="pair names or spec paths; toy stands for the toy at each of --seeds (default: toy)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=default_seeds,
        help=f"toy organisms built at these seeds, the pairs toy-seedN (default: {' '.join(map(str, default_seeds))})",
    )
    parser.add_argument(
        "--conventions", nargs="+", default=["v1"], help="activation position conventions (default: v1)"
    )
    parser.add_argument(
        "--scorers", nargs="+", default=None, help="toxicity scorers (default: the suite's default scorer)"
    )
    parser.add_argument(
        "--max-prompts", type=int, default=None, help="each cell uses only the first N challenge prompts"
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: one cell after another; ray: each cell a Ray task (default: local)",
    )
    parser.add_argument(
        "--address",
        default=None,
        help="--engine ray: join the Ray cluster at this address (e.g. auto, or head-node:6379); "
        "default: start a local Ray instance",
    )
    parser.add_argument(
        "--cpus-per-cell",
        type=float,
        default=1,
        help="CPU threads of each cell's claims run, either engine (float sums depend on the count, "
        "so the engines give the same figures), and the CPUs a Ray task asks for; default 1",
    )
    parser.add_argument(
        "--gpus-per-cell",
        type=float,
        default=None,
        help="--engine ray: GPUs each cell asks for (default: 1 where the cluster has GPUs, else 0)",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=3,
        help="--engine ray: times a cell lost with its worker or node is run again (default 3)",
    )
    parser.add_argument(
        "--reports-dir",
        default="reports",
        help="replication.{json,md}, figures/ and replication/<cell>/ go here",
    )
    parser.add_argument(
        "--claims-dir",
        default=None,
        help="the claims suite (default: claims/ in the current directory, a checkout's root)",
    )
    parser.add_argument("--pytest-args", default="", help='extra pytest arguments for each cell, e.g. "-n 2"')
    parser.add_argument(
        "--no-progress", action="store_true", help="accepted for compatibility: cells build toys without bars"
    )
    parser.set_defaults(func=cmd_sweep)


def build_parser() -> argparse.ArgumentParser:
    # Raw: the description (the module docstring) keeps its one line per command.
    parser = argparse.ArgumentParser(
        prog="dpoclaims", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache-dir", default=None, help="cache root (default: $DPOCLAIMS_CACHE or the user cache dir)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build-toy", help="build (or reuse) the toy organism and write its measurements")
    build.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"the toy's seed (default {DEFAULT_SEED}, the default toy)",
    )
    build_mode = build.add_mutually_exclusive_group()
    build_mode.add_argument("--force", action="store_true", help="rebuild even if cached")
    build_mode.add_argument(
        "--print-key",
        action="store_true",
        help="print only the toy's cache key for this --seed and exit (builds nothing)",
    )
    build.add_argument("--report", default="reports/toy.json")
    build.add_argument("--no-progress", action="store_true")
    _add_device(
        build,
        "default cpu (not read from $DPOCLAIMS_DEVICE): the reference toy, bit-identical on every CPU run "
        "and the one the claims use. Built on CUDA the toy is another organism (other float sums), cached "
        "under its own key",
        default="cpu",
    )
    build.set_defaults(func=cmd_build_toy)

    build_pair = sub.add_parser(
        "build-pair",
        help="build (or reuse) the smollm2 pair (SmolLM2-135M-Instruct and its DPO model) and write its measurements",
    )
    build_pair.add_argument(
        "pair", help="smollm2, or smollm2-seedN: its DPO stage run at seed N (smollm2 is seed 0)"
    )
    build_pair.add_argument(
        "--report", default=None, help="where to write its measurements (default reports/PAIR.json)"
    )
    build_pair.add_argument("--no-progress", action="store_true")
    build_pair.add_argument(
        "--print-key", action="store_true", help="print only the pair's cache key and exit (builds nothing)"
    )
    build_pair.set_defaults(func=cmd_build_pair)

    dpo = sub.add_parser(
        "train-dpo", help="DPO-train a base model on Lee et al.-format pairs (TRL), save an HF directory"
    )
    dpo.add_argument("--base", required=True, help="base model: local HF directory or hub id")
    dpo.add_argument(
        "--pairs",
        required=True,
        help="JSONL with prompt_text, unpert_gen_text (preferred), pert_gen_text (rejected)",
    )
    dpo.add_argument("--out", required=True, help="output directory")
    dpo.add_argument("--beta", type=float, default=0.1)
    dpo.add_argument("--lr", type=float, default=1e-6)
    dpo.add_argument("--batch-size", type=int, default=4)
    dpo.add_argument("--max-epochs", type=int, default=1)
    dpo.add_argument("--eval-every", type=int, default=50)
    dpo.add_argument(
        "--patience",
        type=int,
        default=3,
        help="evaluations without validation-loss improvement before stopping",
    )
    dpo.add_argument("--warmup-steps", type=int, default=150)
    dpo.add_argument("--max-length", type=int, default=128)
    dpo.add_argument("--optimizer", default="rmsprop", help="a transformers optim name (Lee et al.: rmsprop)")
    dpo.add_argument("--val-fraction", type=float, default=0.05)
    dpo.add_argument("--seed", type=int, default=0)
    dpo.add_argument("--no-progress", action="store_true")
    _add_device(dpo, "default $DPOCLAIMS_DEVICE, else auto (CUDA when available, else the CPU)")
    _add_allow_pickle_globals(dpo)
    dpo.set_defaults(func=_allowing_pickle_globals(cmd_train_dpo))

    info = sub.add_parser("info", help="load a pair and print its shape and fingerprint")
    info.add_argument("--pair", default="toy", help="pair name or path to a pair spec (.toml/.json)")
    _add_device(info, "default $DPOCLAIMS_DEVICE, else auto (CUDA when available, else the CPU)")
    _add_allow_pickle_globals(info)
    info.set_defaults(func=_allowing_pickle_globals(cmd_info))

    probe = sub.add_parser(
        "train-probe", help="fit a linear toxicity probe on a base model from a Jigsaw-style CSV"
    )
    probe.add_argument("--base", required=True, help="base model: local HF directory or hub id")
    probe.add_argument(
        "--csv",
        required=True,
        help="CSV with comment_text, toxic (and optionally severe_toxic, "
        "obscene, threat, insult, identity_hate)",
    )
    probe.add_argument(
        "--out",
        required=True,
        help="output .pt file (a d_model tensor); a .json sidecar is written beside it",
    )
    probe.add_argument(
        "--max-examples", type=int, default=None, help="random subset of the CSV (after shuffling by --seed)"
    )
    probe.add_argument("--val-fraction", type=float, default=0.2)
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--batch-size", type=int, default=32)
    probe.add_argument(
        "--max-tokens", type=int, default=128, help="comments are truncated to this many tokens"
    )
    probe.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation strength")
    probe.add_argument("--no-progress", action="store_true")
    _add_device(probe, "default $DPOCLAIMS_DEVICE, else auto (CUDA when available, else the CPU)")
    _add_allow_pickle_globals(probe)
    probe.set_defaults(func=_allowing_pickle_globals(cmd_train_probe))

    sweep = sub.add_parser(
        "sweep",
        help="run every claim on each cell of pairs x toy seeds x conventions x scorers, write the matrix",
    )
    _add_sweep_options(sweep, default_seeds=[DEFAULT_SEED])
    replicate = sub.add_parser(
        "replicate",
        help="the sweep over toy seeds (default 0 1 2): run every claim on each, write the matrix",
    )
    _add_sweep_options(replicate, default_seeds=[0, 1, 2])

    calibration = sub.add_parser(
        "calibrate",
        help="run every claim on the planted organisms (known truth) over replications; write reports/calibration.*",
    )
    calibration.add_argument(
        "--replications",
        type=int,
        default=DEFAULT_REPLICATIONS,
        help=f"replications per organism (default {DEFAULT_REPLICATIONS})",
    )
    calibration.add_argument(
        "--prompts",
        type=int,
        default=DEFAULT_PROMPTS,
        help=f"distinct challenge prompts per replication (default {DEFAULT_PROMPTS})",
    )
    calibration.add_argument(
        "--texts",
        type=int,
        default=DEFAULT_TEXTS,
        help=f"held-out texts per replication (default {DEFAULT_TEXTS})",
    )
    calibration.add_argument(
        "--search-examples",
        type=int,
        default=DEFAULT_SEARCH_EXAMPLES,
        help=f"examples each search draws after its stated ones (default {DEFAULT_SEARCH_EXAMPLES})",
    )
    calibration.add_argument(
        "--organisms",
        nargs="+",
        default=None,
        help="planted organisms (default: all; see docs/calibration.md)",
    )
    calibration.add_argument("--seed", type=int, default=0, help="the calibration's seed (default 0)")
    calibration.add_argument(
        "--workers", type=int, default=2, help="worker processes, one torch thread each (default 2)"
    )
    calibration.add_argument("--reports-dir", default="reports", help="calibration.{md,json,png} go here")
    calibration.set_defaults(func=cmd_calibrate)

    view = sub.add_parser(
        "view",
        help="open (or serve) the latest report page: reports/index.html or a sweep's replication.html",
    )
    view.add_argument(
        "--reports-dir",
        default=None,
        help="where the pages are (default: $DPOCLAIMS_REPORTS, else ./reports)",
    )
    view.add_argument(
        "--no-browser",
        action="store_true",
        help="print the page's path (with --serve: its URL) and open nothing",
    )
    view.add_argument(
        "--serve", action="store_true", help="serve the reports directory on 127.0.0.1 until Ctrl-C"
    )
    view.add_argument("--port", type=int, default=0, help="--serve: the port (default: a free one)")
    view.set_defaults(func=cmd_view)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from dpoclaims.quiet import quiet_third_party

    quiet_third_party()
    try:
        return args.func(args)
    except DpoclaimsError as exc:
        print(f"dpoclaims: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # what was cancelled is said where it happened (e.g. the sweep's matrix)
        print("dpoclaims: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
