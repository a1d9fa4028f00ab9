"""Running the fuzzer: each generated module compiled and checked on each backend, failures
minimised and written out as regression tests, the known ones looked up, op coverage counted.

A module passes on a backend when `compiler.check_parity` says so: the compiled outputs
against eager and the float64 reference, under the parity rule. A backend may also refuse it
with a clear error (`UnsupportedOpError`, `TritonUnsupportedError`). Anything else fails: a
mismatch, or a crash (any other exception). A failure is explained only by a row of the
known-failures table (`load_known`), which names its seed, its backend and why.
"""

from __future__ import annotations

import re
import time
import tomllib
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from backends.triton.ops import TritonUnsupportedError
from compiler.compiled import Compiled
from compiler.core.errors import UnsupportedOpError
from compiler.core.ops import OPS
from compiler.fuzz.generator import Case, Source, build, generate
from compiler.parity import check_parity

REFUSALS = (UnsupportedOpError, TritonUnsupportedError)


@dataclass(frozen=True)
class Outcome:
    """How one backend answered one module: "ok", "refused", "mismatch" or "crash"."""

    backend: str
    status: str
    detail: str = ""  # the parity report, the refusal's message, or the traceback
    error: str = ""  # a crash's exception type (and the one it wraps, under the interpreter)
    summary: str = ""  # one line: the failing parity row, or the exception

    @property
    def failed(self) -> bool:
        return self.status in ("mismatch", "crash")

    @property
    def signature(self) -> str:
        """What a smaller module must still show to count as the same failure."""
        return f"crash {self.error}" if self.status == "crash" else self.status


def _crash(backend: str, e: BaseException) -> Outcome:
    error = type(e).__qualname__
    if e.__cause__ is not None:  # the Triton interpreter wraps what a kernel raised
        error += f" from {type(e.__cause__).__qualname__}"
    summary = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return Outcome(backend, "crash", traceback.format_exc(limit=-12), error, summary[:200])


@dataclass
class Result:
    """One module checked: its source, each backend's outcome, the ops its graphs hold."""

    source: Source
    outcomes: list[Outcome]
    ops: frozenset[str]
    seconds: float

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failed]


def graph_ops(compiled: Compiled) -> frozenset[str]:
    """The ops of the captured graph and of the optimized one: what users write and what
    recognition makes of it."""
    return frozenset(n.op for g in (compiled.captured.graph, compiled.graph) for n in g.nodes)


def _check(case: Case, backends: Sequence[str]) -> tuple[list[Outcome], frozenset[str]]:
    """All of `backends` in one compile; the outcome of each."""
    try:
        model, inputs, _ = build(case)  # a module that does not build is the fuzzer's crash
        report = check_parity(model, inputs, backends=tuple(backends))
    except REFUSALS as e:
        reason = f"{type(e).__name__}: {e}"
        return [Outcome(b, "refused", reason, summary=reason[:200]) for b in backends], frozenset()
    except Exception as e:
        return [_crash(b, e) for b in backends], frozenset()
    outcomes = []
    for backend in backends:
        rows = [r for r in report.rows if r.backend == backend]
        if bool(rows) and all(r.ok for r in rows):
            outcomes.append(Outcome(backend, "ok"))
            continue
        bad = next(r for r in rows if not r.ok) if rows else None
        summary = (
            f"{bad.output}: max abs err {bad.max_abs:.3g} against a budget of {bad.budget:.3g}"
            if bad is not None
            else "no outputs"
        )
        outcomes.append(Outcome(backend, "mismatch", str(report), summary=summary))
    return outcomes, graph_ops(report.compiled)


def check_case(case: Case, backends: Sequence[str]) -> Result:
    """`case` compiled and checked on `backends`. When they do not all pass together, each
    is checked alone, so a refusal or crash on one does not hide how the others answer."""
    start = time.perf_counter()
    outcomes, ops = _check(case, backends)
    if len(backends) > 1 and any(o.status != "ok" for o in outcomes):
        alone = [_check(case, (b,)) for b in backends]
        outcomes = [found[0] for found, _ in alone]
        ops = ops.union(*(o for _, o in alone))
    return Result(generate(case), outcomes, ops, time.perf_counter() - start)


# ----------------------------------------------------------------------------- known failures


@dataclass(frozen=True)
class KnownFailure:
    """A row of the known-failures table: a failure found and not fixed yet."""

    case: Case
    backend: str
    status: str  # "mismatch" or "crash"
    reason: str


def load_known(path: Path | None) -> list[KnownFailure]:
    """The table (TOML, `[[failure]]` rows of seed, backend, status, reason, and the
    minimised case's `drop`, `steps`, `size_cap` when it has them); none without a path."""
    if path is None or not path.exists():
        return []
    rows = tomllib.loads(path.read_text()).get("failure", [])
    known = []
    for row in rows:
        case = Case(
            int(row["seed"]),
            frozenset(row.get("drop", ())),
            row.get("steps"),
            row.get("size_cap"),
        )
        status = str(row["status"])
        if status not in ("mismatch", "crash"):
            raise ValueError(f"{path}: a failure's status is mismatch or crash, got {status!r}")
        known.append(KnownFailure(case, str(row["backend"]), status, str(row["reason"])))
    return known


def explained(outcome: Outcome, case: Case, known: Iterable[KnownFailure]) -> KnownFailure | None:
    """The row of the table that explains `outcome` of `case`'s seed: the same seed, backend
    and kind of failure (a listed mismatch does not explain a crash)."""
    return next(
        (
            k
            for k in known
            if (k.case.seed, k.backend, k.status) == (case.seed, outcome.backend, outcome.status)
        ),
        None,
    )


# ----------------------------------------------------------------------------- minimising


def minimize(
    case: Case,
    backend: str,
    signature: str,
    *,
    budget: int = 60,
    log: Callable[[str], None] = lambda _: None,
) -> Case:
    """The smallest case found that still fails on `backend` the same way (`signature`):
    fewer steps drawn, steps left out one by one, then every size capped; repeated while it
    shrinks, at most `budget` checks."""
    tries = 0

    def fails(c: Case) -> bool:
        nonlocal tries
        tries += 1
        outcome = check_case(c, (backend,)).outcomes[0]
        return outcome.failed and outcome.signature == signature

    total = generate(case).steps
    best = case
    changed = True
    while changed and tries < budget:
        changed = False
        for n in range(1, (best.steps or total)):
            if tries >= budget:
                break
            if fails(c := replace(best, steps=n)):
                best, changed = c, True
                log(f"  {best}")
                break
        for i in reversed(range(best.steps or total)):
            if i in best.drop or tries >= budget:
                continue
            if fails(c := replace(best, drop=best.drop | {i})):
                best, changed = c, True
                log(f"  {best}")
        for cap in (1, 2, 3, 4, 5, 8):
            if tries >= budget or (best.size_cap is not None and cap >= best.size_cap):
                break
            if fails(c := replace(best, size_cap=cap)):
                best, changed = c, True
                log(f"  {best}")
                break
    return best


def write_regression(
    case: Case, outcome: Outcome, directory: Path, failing: Sequence[str] = ()
) -> Path:
    """The module of `case` as a regression test file `directory/seed_<seed>_<backends>.py`:
    what failed in its docstring, the backends to check in `BACKENDS` (numpy, `outcome`'s and
    the others that `failing` names), then the module source (`tests/fuzz/test_regressions.py`
    runs every file there)."""
    directory.mkdir(parents=True, exist_ok=True)
    failed = tuple(dict.fromkeys([outcome.backend, *failing]))
    path = directory / f"seed_{case.seed}_{'_'.join(failed)}.py"
    source = generate(case)
    backends = tuple(dict.fromkeys(["numpy", *failed]))
    path.write_text(
        f'"""Found by the fuzzer: {case}, {source.dtype}, {source.inputs}.\n'
        f"{', '.join(failed)}: {outcome.status}: {outcome.summary}\n"
        f'"""\n\n'
        f"BACKENDS = {backends!r}\n\n" + source.text
    )
    return path


# ----------------------------------------------------------------------------- a campaign


def _reason(message: str) -> str:
    """A refusal's message without the names of one module's kernels and values, so
    refusals for one reason count together."""
    message = re.sub(r"kernel k\d+\w*", "kernel K", message)
    return re.sub(r" \([tr]\d+\)", "", message)[:160]


@dataclass
class Campaign:
    """What a run of many seeds found."""

    results: list[Result] = field(default_factory=list)
    explained: list[tuple[Result, Outcome, KnownFailure]] = field(default_factory=list)
    unexplained: list[tuple[Result, Outcome]] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, Counter[str]]:
        """backend -> status -> modules."""
        out: dict[str, Counter[str]] = {}
        for r in self.results:
            for o in r.outcomes:
                out.setdefault(o.backend, Counter())[o.status] += 1
        return out

    def coverage(self) -> dict[str, float]:
        """Each op of the op table -> the share of modules whose graphs hold it."""
        counts = Counter(op for r in self.results for op in r.ops)
        n = max(len(self.results), 1)
        return {op: counts[op] / n for op in OPS}

    def summary(self) -> str:
        lines = [f"{len(self.results)} modules in {self.seconds:.0f} s"]
        for backend, c in self.counts().items():
            parts = ", ".join(f"{c[s]} {s}" for s in ("ok", "refused", "mismatch", "crash") if c[s])
            lines.append(f"  {backend:<7} {parts}")
        lines.append(
            f"  failures: {len(self.unexplained)} unexplained, {len(self.explained)} known"
        )
        refusals = Counter(
            f"{o.backend}: {_reason(o.detail.splitlines()[0])}"
            for r in self.results
            for o in r.outcomes
            if o.status == "refused"
        )
        if refusals:
            lines.append("  refusals, by reason:")
            lines += [f"    {n:4d}  {reason}" for reason, n in refusals.most_common()]
        return "\n".join(lines)

    def coverage_table(self, floor: float = 0.01) -> str:
        cov = sorted(self.coverage().items(), key=lambda kv: (-kv[1], kv[0]))
        rows = [
            f"  {op:<20} {share:6.1%}{'  < ' + format(floor, '.0%') if share < floor else ''}"
            for op, share in cov
        ]
        return "op coverage (share of modules whose graphs hold the op):\n" + "\n".join(rows)


def run(
    seeds: Iterable[int],
    backends: Sequence[str],
    *,
    triton_every: int = 1,
    known: Sequence[KnownFailure] = (),
    regressions: Path | None = None,
    minimize_budget: int = 60,
    log: Callable[[str], None] = print,
    progress_every: int = 50,
) -> Campaign:
    """Check each seed's module on `backends` ("triton" only on every `triton_every`-th
    seed); each unexplained failure is printed, and with `regressions` minimised and written
    there as a regression test."""
    campaign = Campaign()
    start = time.perf_counter()
    seeds = list(seeds)
    for i, seed in enumerate(seeds):
        chosen = [b for b in backends if b != "triton" or seed % triton_every == 0]
        result = check_case(Case(seed), chosen)
        campaign.results.append(result)
        new: dict[str, list[Outcome]] = {}  # signature -> the backends failing so
        for outcome in result.failures:
            row = explained(outcome, result.source.case, known)
            if row is not None:
                campaign.explained.append((result, outcome, row))
                continue
            campaign.unexplained.append((result, outcome))
            where = f"{result.source.case} on {outcome.backend}"
            log(f"FAIL {where}: {outcome.status}\n{outcome.detail}")
            log(f"repro: tilefuse fuzz --n 1 --seed {seed} --backends {outcome.backend}")
            new.setdefault(outcome.signature, []).append(outcome)
        if new:
            log(result.source.text)
        for signature, same in new.items() if regressions is not None else ():
            first = same[0]  # one minimisation for the backends that fail alike
            small = minimize(
                result.source.case, first.backend, signature, budget=minimize_budget, log=log
            )
            again = check_case(small, (first.backend,)).outcomes[0]
            if not again.failed:  # a failure that comes and goes: nothing to write down
                log(f"minimised to {small}, which no longer fails: no regression test written")
                continue
            path = write_regression(small, again, regressions, [o.backend for o in same])
            log(f"minimised to {small}: {path}")
        if progress_every and ((i + 1) % progress_every == 0 or i + 1 == len(seeds)):
            elapsed = time.perf_counter() - start
            log(
                f"[{i + 1}/{len(seeds)}] seeds {seeds[0]}..{seed}: "
                f"{len(campaign.unexplained)} unexplained failures, "
                f"{len(campaign.explained)} known, {elapsed:.0f} s"
            )
    campaign.seconds = time.perf_counter() - start
    return campaign
