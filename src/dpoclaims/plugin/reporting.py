"""Expected outcomes per pair, and the reports written at the end of every run.

- Collection: a claim marked ``hypothesis=True`` asserts a hypothesis the paper refutes and
  is expected to fail (``xfail(strict=True)``). ``claims/expectations.toml`` declares, per
  pair, claims known not to replicate there, with the measured reason; such a claim's
  expectation is inverted. A run is green when every outcome matches what is declared.
- Reporting: each claim test attaches its measurement to its report; the controller (never
  an xdist worker) gathers them, with each claim's wall time, and writes ``claims.json`` (with
  the run's manifest), ``claims.md``, ``index.html``, badges and figures.

A run without claims costs nothing here: the paper table, the claim records and the reports
are imported once a claim is collected or reported, and the recorder stays inert until then.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dpoclaims.files import TOMLDecodeError, read_toml
from dpoclaims.plugin.options import (
    CLAIM_ITEM_KEY,
    KEYWORD_MARKERS,
    ClaimItem,
    SuiteOptions,
    configured_options,
)
from dpoclaims.plugin.resources import (
    CLAIM_PROPERTY,
    FIGURES_PROPERTY,
    META_PROPERTY,
    MISSING_FILES,
    PAIR_PROPERTY,
    runs_claims,
)

if TYPE_CHECKING:
    from dpoclaims.claims.results import ClaimId, ClaimRecord
    from dpoclaims.stats import Verdict

KEYWORDS = frozenset(KEYWORD_MARKERS)


def expectations_file(rootpath: Path) -> Path:
    """``claims/expectations.toml`` under the run's root directory (a checkout), or the file
    named by ``$DPOCLAIMS_EXPECTATIONS`` (a table of your own pairs)."""
    default = rootpath / "claims" / "expectations.toml"
    value = os.environ.get("DPOCLAIMS_EXPECTATIONS")
    if value is None:
        return default
    if not value.strip():
        raise pytest.UsageError(
            "DPOCLAIMS_EXPECTATIONS is set but empty; name an expectations table (a .toml file) or unset it "
            f"(then {default} is used)"
        )
    return Path(value).expanduser()


def load_expectations(pair: str, rootpath: Path) -> dict[ClaimId, tuple[Verdict, str]]:
    """``claim id -> (declared verdict, measured reason)`` for the claims declared not to
    replicate on ``pair`` (looked up by the pair's name, also when ``pair`` is a spec file).

    A plain string value declares ``contradicts``; ``{ verdict = "inconclusive", reason = "..." }``
    (or ``"not measurable"``, ``"contradicts"``) declares that state. Every problem with the table
    (missing, a directory, not UTF-8, not TOML, values of the wrong type) is one usage error naming it."""
    from dpoclaims.claims.results import DECLARABLE, ClaimId
    from dpoclaims.train.named_pairs import pair_name

    path = expectations_file(rootpath)
    named = "DPOCLAIMS_EXPECTATIONS" in os.environ
    source = f"the expectations table {path}" + (" ($DPOCLAIMS_EXPECTATIONS)" if named else "")
    if path.is_dir():
        raise pytest.UsageError(f"{source} is a directory; name the .toml file itself")
    if not path.is_file():
        if named:
            raise pytest.UsageError(f"DPOCLAIMS_EXPECTATIONS names {path}, which does not exist")
        return {}
    try:
        document = read_toml(path)
    except UnicodeDecodeError as exc:
        raise pytest.UsageError(
            f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    except (OSError, TOMLDecodeError) as exc:
        raise pytest.UsageError(f"cannot read {source}: {exc}") from None
    from dpoclaims.errors import DpoclaimsError

    try:  # a spec file's name; one that takes a built-in pair's name is refused
        name = pair_name(pair)
    except DpoclaimsError as exc:
        raise pytest.UsageError(str(exc)) from None
    table = document.get("pairs", {})
    if not isinstance(table, dict):
        raise pytest.UsageError(
            f"{source}: 'pairs' must be a table ([pairs.<pair name>] sections), not {table!r}"
        )
    entries = table.get(name, {})
    if not isinstance(entries, dict):
        raise pytest.UsageError(
            f"{source}: the entry of pair {name!r} must be a table of claim id = reason "
            f"([pairs.{name}]), not {entries!r}"
        )
    declared: dict[ClaimId, tuple[Verdict, str]] = {}
    for claim, value in entries.items():
        try:
            key = ClaimId.parse(claim)
        except ValueError as exc:
            raise pytest.UsageError(f"{path}: {exc}") from None
        if isinstance(value, str):
            declared[key] = ("contradicts", value)
        elif (
            isinstance(value, dict)
            and value.get("verdict") in DECLARABLE
            and isinstance(value.get("reason"), str)
        ):
            declared[key] = (value["verdict"], value["reason"])
        else:
            raise pytest.UsageError(
                f"{path}: {claim!r} must be a reason string (contradicts) or a table "
                f'{{ verdict = one of {list(DECLARABLE)}, reason = "..." }}, not {value!r}'
            )
    return declared


def claim_id(item: pytest.Item) -> ClaimId | None:
    """The id of a test marked ``claim`` (its parameter from the parametrization), else None."""
    marker = item.get_closest_marker("claim")
    if marker is None:
        return None
    from dpoclaims.claims.results import ClaimId

    callspec = getattr(item, "callspec", None)
    param = callspec.id if callspec else marker.kwargs.get("param")
    return ClaimId(marker.args[0], param or "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Parse each claim test's marker and the pair's expectation once, into its :class:`ClaimItem`
    (a run that collects no claim reads no table)."""
    ids = {item: claim_id(item) for item in items}
    if not any(ids.values()):
        return
    from dpoclaims.claims import paper
    from dpoclaims.claims.results import ClaimNotHeld, Expectation

    options = configured_options(config)
    declared = load_expectations(options.pair, config.rootpath)
    # Every id of the paper table counts as known, so one claims file can run on its own.
    table_ids = {entry.claim_id(p) for entry in paper.ENTRIES for p in (entry.params or (None,))}
    known = table_ids | {cid for cid in ids.values() if cid is not None}
    unknown = set(declared) - known
    if unknown:
        raise pytest.UsageError(
            f"{expectations_file(config.rootpath)} declares unknown claim ids for {options.pair!r}: "
            f"{sorted(str(u) for u in unknown)}"
        )
    for index, item in enumerate(items):
        cid = ids[item]
        if cid is None:
            continue
        marker = item.get_closest_marker("claim")
        assert marker is not None
        state, reason = declared.get(cid, (None, ""))
        expectation = Expectation(state, reason, hypothesis=bool(marker.kwargs.get("hypothesis", False)))
        keyword = next((m.name for m in item.iter_markers() if m.name in KEYWORDS), "")
        item.stash[CLAIM_ITEM_KEY] = ClaimItem(cid, index, keyword, expectation)
        # Only the claim's own assertion (ClaimNotHeld) is an expected failure: any other
        # exception, in the claim or its fixtures, fails the run.
        why = expectation.xfail_reason(options.pair)
        if why is not None:
            item.add_marker(pytest.mark.xfail(strict=True, raises=ClaimNotHeld, reason=why))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    claim_item = item.stash.get(CLAIM_ITEM_KEY, None)
    if claim_item is not None:  # JSON across xdist workers; a ClaimItem again on the controller
        meta = {
            "claim_id": str(claim_item.id),
            "order": claim_item.order,
            "keyword": claim_item.keyword,
            "declared": claim_item.expectation.declared,
            "reason": claim_item.expectation.reason,
            "hypothesis": claim_item.expectation.hypothesis,
        }
        report.user_properties.append((META_PROPERTY, meta))
    return report


def _claim_item(meta: dict[str, Any]) -> ClaimItem:
    from dpoclaims.claims.results import ClaimId, Expectation

    expectation = Expectation(meta["declared"], meta["reason"], hypothesis=meta["hypothesis"])
    return ClaimItem(ClaimId.parse(meta["claim_id"]), meta["order"], meta["keyword"], expectation)


def _outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.when != "call" and report.failed:
        return "error"
    return report.outcome


class ClaimRecorder:
    """Gathers the claim records of one pytest run (on the controller under xdist) and writes
    the reports at its end. One instance per config, so in-process runs never mix.

    Registered on every process that may write reports (never an xdist worker: the controller
    of a run that does not name claims/ learns of claims only when their reports arrive), it
    stays inert, importing and writing nothing, until a claim is collected or reported."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: dict[str, ClaimRecord] = {}
        self.header: dict[str, Any] | None = None  # the pair, as a claim test recorded it
        self.figure_data: dict[str, Any] | None = None
        self.written: list[str] = []
        self.selected: set[str] = set()  # claim tests selected (empty on an xdist controller)
        self.messages: list[str] = []  # said at the end of the terminal summary
        self.started = time.time()  # the run's start (the manifest's), reset at session start
        self.began = time.perf_counter()
        self.claim_seconds: dict[str, float] = {}  # claim id -> its test call's duration

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # What the worker recorded (JSON values: dicts); typed again here.
        props: dict[str, Any] = dict(report.user_properties)
        if PAIR_PROPERTY in props:
            self.header = props[PAIR_PROPERTY]
        if FIGURES_PROPERTY in props:
            self.figure_data = props[FIGURES_PROPERTY]
        if META_PROPERTY not in props:
            return
        if report.when == "call" or (report.when == "setup" and (report.skipped or report.failed)):
            from dpoclaims.claims.results import ClaimRecord, ClaimResult

            item = _claim_item(props[META_PROPERTY])
            result = props.get(CLAIM_PROPERTY)
            if report.when == "call":
                self.claim_seconds[str(item.id)] = report.duration
            self.records[report.nodeid] = ClaimRecord(
                id=item.id,
                order=item.order,
                keyword=item.keyword,
                expectation=item.expectation,
                outcome=_outcome(report),
                node_id=report.nodeid,
                result=ClaimResult.from_json(result) if result else None,
                skip_reason=str(report.longrepr[2])
                if report.skipped and isinstance(report.longrepr, tuple)
                else "",
            )

    @pytest.hookimpl(tryfirst=True)  # before the toy is built (minutes)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """The reports directory is checked before any test runs (read-only, a dangling link, a
        full disk): one line and a non-zero exit now, not a traceback after all the work. Here
        when the run names claims/ (also the xdist controller, which collects nothing), else
        once the collected tests include a claim."""
        self.started, self.began = time.time(), time.perf_counter()
        config = self.config
        if hasattr(config, "workerinput") or config.option.collectonly or not runs_claims(config):
            return
        self._check_reports_dir()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        claims = [item for item in session.items if item.get_closest_marker("claim")]
        self.selected = {item.nodeid for item in claims}
        on_worker = hasattr(self.config, "workerinput")  # the controller checks
        if self.selected and not (on_worker or self.config.option.collectonly):
            # Again with the claims collected: a claim of the user's has a badge of its own.
            ids = [item.stash[CLAIM_ITEM_KEY].id for item in claims if CLAIM_ITEM_KEY in item.stash]
            self._check_reports_dir(ids)

    def _check_reports_dir(self, claim_ids: list[ClaimId] | None = None) -> None:
        """The reports directory can be written, and holds no file of the user's where the
        report of ``claim_ids`` (None: every claim of the paper table) would go."""
        from dpoclaims.errors import ReportError
        from dpoclaims.report.writer import check_reports_dir

        try:
            check_reports_dir(configured_options(self.config).reports_dir, claim_ids)
        except ReportError as exc:
            raise pytest.UsageError(str(exc)) from None

    def _incomplete(self, session: pytest.Session, exitstatus: int) -> str | None:
        """Why this run's report would be incomplete (interrupted, stopped early), else None."""
        selected: set[str] = getattr(self, "selected", set())
        missing = selected - set(self.records)
        ran = f"{len(self.records)} of {len(selected)} selected claims ran" if selected else ""
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            return "the run was interrupted (Ctrl-C)" + (f"; {ran}" if ran else "") + "."
        if session.shouldstop or session.shouldfail or missing:
            reason = session.shouldstop or session.shouldfail or "not every selected claim ran"
            return f"the run stopped early ({reason})" + (f"; {ran}" if ran else "") + "."
        return None

    def _manifest(self, options: SuiteOptions, header: dict[str, Any]) -> dict[str, Any]:
        """The run's manifest: what produced the report (see :mod:`dpoclaims.report.manifest`)."""
        from dpoclaims.cache import file_sha256
        from dpoclaims.report.manifest import run_manifest

        recorded = self.header or {}
        expectations = expectations_file(self.config.rootpath)
        settings = {
            "pair": header["pair"],
            "fingerprint": header["fingerprint"],
            "max_prompts": options.max_prompts,
            "convention": options.convention,
            "scorer": header["scorer"],
            "seed": recorded.get("seed"),
            "search_examples": options.search_examples,
            "perplexity": options.perplexity,
            # None: no table, nothing declared
            "expectations": {
                "path": str(expectations),
                "sha256": file_sha256(expectations) if expectations.is_file() else None,
            },
        }
        return run_manifest(
            settings,
            device=recorded.get("device", options.device),
            dtype=options.dtype,
            threads=recorded.get("threads"),
            started=self.started,
            wall_s=time.perf_counter() - self.began,
            durations={"claims_s": dict(sorted(self.claim_seconds.items()))},
        )

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write the reports from what the tests recorded; no model is loaded here."""
        if hasattr(self.config, "workerinput") or not self.records:
            return
        options = configured_options(self.config)
        from dpoclaims.errors import DpoclaimsError
        from dpoclaims.report.writer import previous_report_complete, write_reports

        records = list(self.records.values())
        missing_files = sorted({r.skip_reason for r in records if MISSING_FILES.search(r.skip_reason)})
        if missing_files and all(r.outcome == "skipped" for r in records):
            # Nothing was measured: never a green run.
            self.messages.append(
                "dpoclaims: every selected claim skipped for want of the pair's files: "
                + " | ".join(reason.removeprefix("Skipped: ") for reason in missing_files)
            )
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        incomplete = self._incomplete(session, exitstatus)
        if incomplete and previous_report_complete(options.reports_dir):
            self.messages.append(
                f"dpoclaims: {incomplete} The previous complete report in {options.reports_dir} is left as it was."
            )
            return
        recorded = self.header or {}
        header = {
            "pair": recorded.get("pair", options.pair),
            "fingerprint": recorded.get("fingerprint", "unknown"),
            "n_prompts": recorded.get("n_prompts"),
            "prompts_dropped": recorded.get("prompts_dropped"),
            "prompt_selection": recorded.get("prompt_selection"),
            "convention": options.convention,
            "scorer": recorded.get("scorer", options.scorer),
            "n_layers": recorded.get("n_layers"),
            "n_neurons": recorded.get("n_neurons"),
            "source": "Yang et al. 2024 (arXiv 2411.06424), Lee et al. 2024 (arXiv 2401.01967)",
            "badge_repo": options.badge_repo,
            "incomplete": incomplete,
            "level": _family_level(),
        }
        records = [replace(record, pair_fingerprint=header["fingerprint"]) for record in records]
        try:
            manifest = self._manifest(options, header)
            self.written = [
                str(p)
                for p in write_reports(
                    records, options.reports_dir, header, self.figure_data, run_manifest=manifest
                )
            ]
        except (DpoclaimsError, OSError) as exc:  # one line, not an INTERNALERROR after the whole run
            self.messages.append(f"dpoclaims: ERROR: the reports were not written: {exc}")
            if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return
        if incomplete:
            self.messages.append(
                f"dpoclaims: {incomplete} The report in {options.reports_dir} is marked incomplete."
            )

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        for message in getattr(self, "messages", []):
            terminalreporter.write_line(message, red=True, bold=True)
        if not self.written:
            return
        from dpoclaims.stats import VERDICTS

        options = configured_options(config)
        counts: dict[str, int] = {}
        for record in self.records.values():
            key = record.verdict if record.result is not None else record.outcome
            counts[key] = counts.get(key, 0) + 1
        order = [*VERDICTS, *sorted(set(counts) - set(VERDICTS))]
        markup = {
            "replicates": {"green": True},
            "contradicts": {"red": True},
            "inconclusive": {"yellow": True},
        }
        terminalreporter.write_sep("-", "dpoclaims")
        terminalreporter.write(f"pair {options.pair}: ")
        for index, key in enumerate(k for k in order if k in counts):
            terminalreporter.write(
                ("" if index == 0 else ", ") + f"{counts[key]} {key}", **markup.get(key, {})
            )
        terminalreporter.write_line("")
        terminalreporter.write_line(
            f"reports: {options.reports_dir / 'index.html'} (open it with `dpoclaims view`; + claims.md, "
            "claims.json, badges/ with its README.md, figures/)"
        )


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # a worker's claims reach the controller's recorder
        config.pluginmanager.register(ClaimRecorder(config), "dpoclaims-claim-recorder")


def _family_level() -> float:
    """The one-sided level every verdict is read at (imported when a report is written, not at load)."""
    from dpoclaims.claims import paper

    return paper.SIDE_ALPHA
