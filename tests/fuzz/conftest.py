"""The fuzz batch's op coverage: collected by its tests (the `batch_ops` fixture), printed at
the end of the run."""

from __future__ import annotations

import pytest

from compiler.core.ops import OPS

_BATCH_OPS = pytest.StashKey[dict[int, frozenset[str]]]()


@pytest.fixture(scope="session")
def batch_ops(pytestconfig: pytest.Config) -> dict[int, frozenset[str]]:
    """seed -> the ops of its module's graphs, as the batch compiled them."""
    return pytestconfig.stash.setdefault(_BATCH_OPS, {})


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    found = config.stash.get(_BATCH_OPS, {})
    if not found:
        return
    share = {op: sum(op in ops for ops in found.values()) / len(found) for op in OPS}
    least = sorted(share.items(), key=lambda kv: kv[1])[:6]
    covered = sum(v >= 0.01 for v in share.values())
    terminalreporter.write_line(
        f"fuzz batch: {len(found)} modules; {covered}/{len(OPS)} ops of the op table in >= 1 % "
        "of them; the least: " + ", ".join(f"{op} {v:.1%}" for op, v in least)
    )
