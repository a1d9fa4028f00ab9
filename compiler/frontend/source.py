"""The user's source line of an fx node: what errors and IR comments name.

torch.export records each node's stack trace; the innermost frame in the user's own files (not
torch's, never generated code) is the line an error should point at.
"""

from __future__ import annotations

import torch


def user_frame(stack_trace: str | None) -> tuple[str, int, str] | None:
    """The innermost frame of the user's code (not torch's) in an fx node's stack trace."""
    if not stack_trace:
        return None
    torch_dir = torch.__file__.rsplit("/", 1)[0]
    frames = []
    lines = stack_trace.splitlines()
    for i, line in enumerate(lines):
        parsed = _parse_frame(line)
        if parsed is None:
            continue
        path, lineno = parsed
        code = lines[i + 1].strip() if i + 1 < len(lines) else ""
        frames.append((path, lineno, code))
    # Prefer the user's files over torch's own; never generated code ("<eval_with_key>.3").
    real = [f for f in frames if not f[0].startswith("<")]
    mine = [f for f in real if not f[0].startswith(torch_dir)]
    return (mine or real)[-1] if real else None


def _parse_frame(line: str) -> tuple[str, int] | None:
    summary = line.strip()
    if not summary.startswith('File "'):
        return None
    try:
        path = summary.split('"', 2)[1]
        lineno = int(summary.split(", line ", 1)[1].split(",", 1)[0])
    except (IndexError, ValueError):
        return None
    return path, lineno


def format_frame(frame: tuple[str, int, str] | None) -> str:
    if frame is None:
        return ""
    path, lineno, code = frame
    return f"{path}:{lineno}: {code}" if code else f"{path}:{lineno}"
