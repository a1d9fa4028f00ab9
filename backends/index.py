"""Symbolic index arithmetic for the LLVM backend: affine sums over loop variables.

A kernel evaluates each value at a multi-index; views (reshape, permute, expand, slice), pads,
concatenations and gathers map that index to their input's. Keeping indices symbolic until the
end lets simple algebra remove the divisions a reshape would otherwise cost, and tells the
scheduler which loop variables a value depends on:

    >>> c, h, w = Var("c", 320), Var("h", 32), Var("w", 32)
    >>> linear = c.lin * 1024 + h.lin * 32 + w.lin      # index into a [320, 32, 32] tensor
    >>> linear // (10 * 1024)                           # its group of 10 channels
    (c // 10)
    >>> linear % 1024
    (h*32 + w)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

INF = math.inf


@dataclass(frozen=True)
class Var:
    """A loop variable running over [0, extent)."""

    name: str
    extent: int

    @property
    def lin(self) -> Lin:
        return Lin(0, ((self, 1),))

    def bounds(self) -> tuple[float, float]:
        return 0, self.extent - 1

    def free(self) -> frozenset[str]:
        return frozenset({self.name})

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True)
class FloorDiv:
    x: Lin
    k: int

    def bounds(self) -> tuple[float, float]:
        lo, hi = self.x.bounds()
        return _floor(lo, self.k), _floor(hi, self.k)

    def free(self) -> frozenset[str]:
        return self.x.free()

    def __repr__(self) -> str:
        return f"({self.x!r} // {self.k})"


@dataclass(frozen=True)
class Mod:
    x: Lin
    k: int

    def bounds(self) -> tuple[float, float]:
        return 0, self.k - 1

    def free(self) -> frozenset[str]:
        return self.x.free()

    def __repr__(self) -> str:
        return f"({self.x!r} % {self.k})"


@dataclass(frozen=True)
class Clamp:
    """min(max(x, lo), hi): keeps a gathered or padded index inside its tensor."""

    x: Lin
    lo: int
    hi: int

    def bounds(self) -> tuple[float, float]:
        return self.lo, self.hi

    def free(self) -> frozenset[str]:
        return self.x.free()

    def __repr__(self) -> str:
        return f"clamp({self.x!r}, {self.lo}, {self.hi})"


@dataclass(frozen=True)
class Load:
    """An index read from a tensor (embedding ids, index tensors): value `name` at `index`,
    negative entries wrapped by `wrap` when it is non-zero (x[-1] is x[n-1])."""

    name: str
    index: tuple[Lin, ...]
    wrap: int = 0

    def bounds(self) -> tuple[float, float]:
        return -INF, INF

    def free(self) -> frozenset[str]:
        return frozenset().union(*(i.free() for i in self.index))

    def __repr__(self) -> str:
        return f"{self.name}[{', '.join(map(repr, self.index))}]"


@dataclass(frozen=True)
class ScaleFloor:
    """min(floor(x * step), hi) in float64, as nearest-neighbour resizing computes it."""

    x: Lin
    step: float
    hi: int

    def bounds(self) -> tuple[float, float]:
        return 0, self.hi

    def free(self) -> frozenset[str]:
        return self.x.free()

    def __repr__(self) -> str:
        return f"floor({self.x!r} * {self.step})"


Atom = Var | FloorDiv | Mod | Clamp | Load | ScaleFloor


def scale_floor(x: Lin, step: float, hi: int) -> Lin:
    """min(floor(x * step), hi), folded to a constant when x is one (an output dim of size 1):
    a backend renders an atom's operand as an expression, never as a bare literal."""
    if not x.terms:
        return Lin.of(min(math.floor(x.const * step), hi))
    return Lin.of(ScaleFloor(x, step, hi))


@dataclass(frozen=True)
class Lin:
    """const + sum(coeff * atom), kept canonical (sorted, no zero coefficients)."""

    const: int
    terms: tuple[tuple[Atom, int], ...] = field(default=())

    @staticmethod
    def of(value: int | Lin | Atom) -> Lin:
        if isinstance(value, Lin):
            return value
        if isinstance(value, int):
            return Lin(value)
        return Lin(0, ((value, 1),))

    @staticmethod
    def _make(const: int, terms: dict[Atom, int]) -> Lin:
        for atom in [a for a in terms if isinstance(a, Mod)]:
            c = terms.get(atom, 0)
            whole = FloorDiv(atom.x, atom.k)
            if c and terms.get(whole) == c * atom.k:  # x % k + (x // k) * k == x
                del terms[atom], terms[whole]
                const += atom.x.const * c
                for a, ca in atom.x.terms:
                    terms[a] = terms.get(a, 0) + ca * c
        items = sorted(((a, c) for a, c in terms.items() if c), key=lambda t: repr(t[0]))
        return Lin(const, tuple(items))

    def __add__(self, other: int | Lin) -> Lin:
        o = Lin.of(other)
        terms = dict(self.terms)
        for a, c in o.terms:
            terms[a] = terms.get(a, 0) + c
        return Lin._make(self.const + o.const, terms)

    def __sub__(self, other: int | Lin) -> Lin:
        return self + Lin.of(other) * -1

    def __mul__(self, k: int) -> Lin:
        return Lin._make(self.const * k, {a: c * k for a, c in self.terms})

    def bounds(self) -> tuple[float, float]:
        lo = hi = float(self.const)
        for a, c in self.terms:
            alo, ahi = a.bounds()
            lo += min(c * alo, c * ahi)
            hi += max(c * alo, c * ahi)
        return lo, hi

    def free(self) -> frozenset[str]:
        return frozenset().union(*(a.free() for a, _ in self.terms))

    def within(self, lo: float, hi: float) -> bool:
        blo, bhi = self.bounds()
        return blo >= lo and bhi <= hi

    def constant(self) -> int | None:
        return None if self.terms else self.const

    def _split(self, k: int) -> tuple[Lin, Lin]:
        """self = k * q + r, with every coefficient of q's terms pulled out of r."""
        q = {a: c // k for a, c in self.terms if c % k == 0}
        r = {a: c for a, c in self.terms if c % k}
        return Lin._make(self.const // k, q), Lin._make(self.const % k, r)

    def __floordiv__(self, k: int) -> Lin:
        if k == 1:
            return self
        q, r = self._split(k)
        if r.within(0, k - 1):
            return q
        for m in _divisors_from(r, k):  # r = m * q2 + r2, 0 <= r2 < m, m | k
            q2, r2 = r._split(m)
            if r2.within(0, m - 1):
                return q + q2 // (k // m)
        lo, _ = r.bounds()
        if lo >= 0 or not r.terms:
            return q + Lin.of(FloorDiv(r, k))
        return Lin.of(FloorDiv(self, k))

    def __mod__(self, k: int) -> Lin:
        if k == 1:
            return Lin(0)
        _, r = self._split(k)
        if r.within(0, k - 1):
            return r
        for m in _divisors_from(r, k):
            q2, r2 = r._split(m)
            if r2.within(0, m - 1):
                return (q2 % (k // m)) * m + r2
        return Lin.of(Mod(r if r.bounds()[0] >= 0 else self, k))

    def __repr__(self) -> str:
        parts = [repr(a) if c == 1 else f"{a!r}*{c}" for a, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return parts[0] if len(parts) == 1 else "(" + " + ".join(parts) + ")"


def _divisors_from(r: Lin, k: int) -> list[int]:
    """Candidate m for splitting r by: coefficients of r that divide k, largest first."""
    return sorted({abs(c) for _, c in r.terms if 1 < abs(c) < k and k % abs(c) == 0}, reverse=True)


def _floor(x: float, k: int) -> float:
    return x if math.isinf(x) else x // k


def linearize(index: tuple[Lin, ...], shape: tuple[int, ...]) -> Lin:
    """The row-major element offset of `index` in a contiguous tensor of `shape`."""
    total, stride = Lin(0), 1
    for i, n in zip(reversed(index), reversed(shape), strict=True):
        if n != 1:
            total = total + i * stride
        stride *= n
    return total


def unravel(linear: Lin, shape: tuple[int, ...]) -> tuple[Lin, ...]:
    """The multi-index of a row-major offset in `shape` (the inverse of `linearize`)."""
    out: list[Lin] = []
    stride = math.prod(shape)
    for i, n in enumerate(shape):
        stride //= n
        if n == 1:
            out.append(Lin(0))
        elif i == 0:
            out.append(linear // stride)
        else:
            out.append((linear // stride) % n)
    return tuple(out)


def reshape_index(
    index: tuple[Lin, ...], out_shape: tuple[int, ...], in_shape: tuple[int, ...]
) -> tuple[Lin, ...]:
    """Map an index of reshape's output to its input's index."""
    return unravel(linearize(index, out_shape), in_shape)
