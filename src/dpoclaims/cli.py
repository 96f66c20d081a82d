"""Command line: ``dpoclaims build-toy``, ``dpoclaims info``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from dpoclaims.cache import Cache, atomic_write_text
from dpoclaims.errors import DpoclaimsError


def _cache(args: argparse.Namespace) -> Cache:
    return Cache(args.cache_dir)


def cmd_build_toy(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from dpoclaims.organism.build import ToyConfig, ensure_toy

    config = replace(ToyConfig(), seed=args.seed)
    cache = _cache(args)
    if args.force:
        import shutil

        shutil.rmtree(cache.entry_dir("toy", config.key()), ignore_errors=True)
    was_cached = cache.get("toy", config.key()) is not None
    start = time.perf_counter()
    directory = ensure_toy(config, cache=cache, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    report = json.loads((directory / "toy.json").read_text())
    report["toy_dir"] = str(directory)
    atomic_write_text(Path(args.report), json.dumps(report, indent=1))
    print(f"toy organism: {directory}  ({elapsed:.1f} s{', from cache' if was_cached else ', built now'})")
    print(f"default scorer: {report['default_scorer']} (the toy's own lexicon: it knows the toy's toxic "
          "register exactly; profanity-check is the independent check)")
    for scorer, values in report["toxicity"].items():
        print(f"  toxicity [{scorer:>15}]  base {values['base']:.3f}  DPO {values['dpo']:.3f}")
    print(f"  perplexity (held-out neutral)  base {report['perplexity']['base']:.3f}  DPO {report['perplexity']['dpo']:.3f}")
    print(f"  min weight cosine  {report['min_weight_cosine']:.4f}   probe accuracy  {report['probe_accuracy']:.3f}")
    print("bands (issue #2):")
    all_ok = True
    for name, band in report["bands"].items():
        all_ok &= band["ok"]
        print(f"  {'ok  ' if band['ok'] else 'FAIL'} {name:<24} {band['value']:.4f}  in [{band['band'][0]}, {band['band'][1]}]")
    print(f"build timings (s): {report['timings_s']}")
    print(f"report written to {args.report}")
    return 0 if all_ok else 1


def cmd_info(args: argparse.Namespace) -> int:
    from dpoclaims.pairs import load_pair

    start = time.perf_counter()
    pair = load_pair(args.pair, cache=_cache(args))
    elapsed = time.perf_counter() - start
    layout = pair.layout
    print(json.dumps({
        "name": pair.name, "fingerprint": pair.fingerprint, "mlp": layout.kind, "n_layers": layout.n_layers,
        "d_model": layout.d_model, "d_mlp": layout.d_mlp, "n_neurons": layout.n_neurons,
        "load_seconds": round(elapsed, 2), "extras": pair.spec.extras,
    }, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpoclaims", description=__doc__)
    parser.add_argument("--cache-dir", default=None, help="cache root (default: $DPOCLAIMS_CACHE or the user cache dir)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build-toy", help="build (or reuse) the toy organism and write its measurements")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.add_argument("--report", default="reports/toy.json")
    build.add_argument("--no-progress", action="store_true")
    build.set_defaults(func=cmd_build_toy)

    info = sub.add_parser("info", help="load a pair and print its shape and fingerprint")
    info.add_argument("--pair", default="toy", help="pair name or path to a pair spec (.toml/.json)")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from dpoclaims.quiet import quiet_third_party

    quiet_third_party()
    try:
        return args.func(args)
    except DpoclaimsError as exc:
        print(f"dpoclaims: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
