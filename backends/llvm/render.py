"""The `llvm` backend: native CPU code through llvmlite, with GEMMs and convolutions in the
library torch ships.

Each kernel of the schedule becomes native parts and extern calls (`split_externs`): a fused
`matmul + bias + gelu` kernel runs `torch.matmul` (MKL/oneDNN) into a slot, then one native
loop reads the product once, adds the bias, applies GELU and writes the kernel's output. The
program is a readable Python module (`LlvmProgram.driver`) with one function per kernel and a
program function; one arena, allocated once at load (`passes.memory.plan_memory`), holds every
planned value and the scratch (slots) that extern results and parts hand over in inside one
kernel, overlapping wherever no kernel needs both. The native parts are LLVM modules
(`LlvmProgram.modules`), compiled with -O3 for this CPU, cached on disk and loaded into the
process.

    def k5_fused_matmul_add_gelu(a_t25, a_w, a_b, out_t29):
        # k5_fused_matmul_add_gelu  matmul  domain=[1, 128, 2048] ...
        torch.matmul(a_t25, a_w.permute(1, 0), out=g_t27)  # extern k5.0_matmul: MKL via torch
        tf_add_gelu_3f2a9c01d2(g_t27, a_b, out_t29)          # native k5.1_add_gelu

Floats compute in float32 (or float64 on request); bf16/f16 values are rounded where the IR
casts, as the NumPy reference does. They are stored in 16 bits wherever only native kernels
read and write them, else in float32 (Note [16-bit storage] in `backends.llvm.storage`): the
driver's views and slots carry each value's storage dtype, and `LlvmProgram.input_dtypes` says
what each graph input is passed as.
"""

from __future__ import annotations

import ast
import builtins
import logging
import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from backends.llvm import attention as llvm_attention
from backends.llvm import conv as llvm_conv
from backends.llvm import gemm as llvm_gemm
from backends.llvm import rows as llvm_rows
from backends.llvm import workers as llvm_workers
from backends.llvm.emit import one_program
from backends.llvm.kernel import KernelModule, render_kernel
from backends.llvm.runtime import DRIVER_GLOBALS, PREPARE, LlvmProgram
from backends.llvm.storage import plan_storage, storage_dtype
from backends.llvm.tuning import Choice, Tuned
from compiler.core.config import num_threads
from compiler.core.ir import Node, print_graph
from compiler.core.reference import local
from compiler.core.schedule import (
    ExternCall,
    KernelSpec,
    Schedule,
    Step,
    output_chains,
    split_externs,
)
from compiler.core.types import TensorType
from passes.memory import Arena, MemoryRequest, output_roots

EXTERNS = {
    "matmul": "torch.matmul (MKL/oneDNN)",
    "conv2d": "torch conv2d (oneDNN)",
    "sdpa": "torch scaled_dot_product_attention",
}
log = logging.getLogger("tilefuse.extern")


MKLDNN_PACKED = torch.backends.mkldnn.is_available() and hasattr(
    torch.ops.mkldnn, "_convolution_pointwise"
)


@dataclass(frozen=True)
class LlvmLayout:
    """A program whose kernels are written and whose modules are compiling, its memory not
    yet placed: `request` is what it needs placed (every planned value in its storage dtype,
    each kernel's slots, its row-block runs)."""

    request: MemoryRequest
    renderer: _Renderer


def tune(
    s: Schedule, *, float_dtype: str = "float32", weights: frozenset[str] = frozenset()
) -> Tuned:
    """How each GEMM of a weight and each attention in the program for `s` runs, measured on
    this host where there is a choice (`llvm_gemm.choose`, `llvm_attention.choose`; Note
    [Measured choices] in backends.llvm.tuning): the pipeline's `tune` stage, before
    `lay_out` starts compiling modules, whose LLVM in other processes would take the cores
    the timing needs."""
    renderer = _Renderer(s, float_dtype, weights)
    with one_program() as bodies:  # the candidates' IR, emitted once for tuning and lay_out
        return Tuned(renderer.tune(renderer.specs()), bodies)


def lay_out(
    s: Schedule,
    *,
    float_dtype: str = "float32",
    weights: frozenset[str] = frozenset(),
    sixteen_bit: bool = True,
    row_blocks: bool = True,
    tuned: Tuned | None = None,
) -> LlvmLayout:
    """The program for `s` up to where its memory goes. `weights`: graph inputs that are model
    weights (parameters), whose GEMM layout may be prepared once and cached while they do not
    change. `sixteen_bit`: store bf16/f16 values in 16 bits where only native kernels touch
    them (Note [16-bit storage]); without it every float is stored in `float_dtype`.
    `row_blocks`: run feed-forwards a block of rows at a time (Note [Row blocks]); without it
    every kernel function computes its whole kernel. `tuned`: what `tune` decided (None:
    the analytic defaults, nothing timed)."""
    renderer = _Renderer(s, float_dtype, weights, sixteen_bit, row_blocks)
    if tuned is not None:
        renderer.tuned.update(tuned.shapes)
    # identical layers' modules are emitted once, and the modules tuning emitted not again
    with one_program(dict(tuned.bodies) if tuned is not None else None):
        return LlvmLayout(renderer.lay_out(), renderer)


def render(layout: LlvmLayout, arena: Arena) -> LlvmProgram:
    """The program of `layout`, its values and slots in `arena` (planned for its request)."""
    return layout.renderer.program(arena)


def entry_name(graph: str) -> str:
    """The driver's program function for graph `graph`: its name, unless that is a name the
    driver already uses (`W`, `F`, `view`, a builtin, a kernel's `k3_...`): then `<name>_forward`.
    A model class named `W` used to replace the packed weights (`W.dnnl(...)` failed)."""
    taken = graph in DRIVER_GLOBALS or hasattr(builtins, graph)
    taken = taken or re.match(r"(k\d+_|[gc]_|tf_|check_)", graph) is not None
    return f"{graph}_forward" if taken else graph


class _Renderer:
    def __init__(
        self,
        s: Schedule,
        float_dtype: str,
        weights: frozenset[str],
        sixteen_bit: bool = True,
        row_blocks: bool = True,
    ) -> None:
        self.s, self.g, self.fd = s, s.graph, float_dtype
        self.weights, self.row_blocks = weights, row_blocks
        self.storage = plan_storage(s, float_dtype, EXTERNS, sixteen_bit)
        self.modules: dict[str, KernelModule] = {}
        self.compiles = llvm_workers.Compiles()  # the modules compiling while the rest renders
        self.constants: dict[str, np.ndarray] = {}
        self.scratch: dict[int, list[tuple[str, int]]] = {}  # kernel index -> (block, bytes)
        # (view, arena block, shape, dtype): a slot's block is "slot <value>", a value's its name
        self.views: list[tuple[str, str, tuple[int, ...], str]] = []
        self.view_bytes: dict[str, int] = {}  # arena block -> bytes its view spans
        self.steps: list[tuple[str, list[Step]]] = []
        self.attentions = 0  # sdpa calls rendered as native attention kernels
        self.choices: list[tuple[str, Choice]] = []  # (extern call, what was chosen and why)
        self.tuned: dict[str, tuple[str, Choice | None]] = {}  # shape -> `tune`'s choice
        self.fused: set[int] = set()  # ids of native parts an extern call computed
        self.checks: list[tuple[tuple[str, str, str, int, int], ...]] = []  # per call site
        self.kernels: list[str] = []  # each kernel's driver function (`lay_out`)
        self.main = ""  # the program function (`lay_out`)

    def _add(self, m: KernelModule) -> None:
        """Keep one module per symbol; a new one starts compiling (`llvm_workers.Compiles`)."""
        if m.symbol not in self.modules:
            self.modules[m.symbol] = m
            self.compiles.submit(m.ir)

    def dtype(self, name: str, t: TensorType) -> str:
        """The storage dtype of value `name` as driver source: `torch.bfloat16`."""
        return str(self.storage.dtype(name, t))

    def specs(self) -> list[KernelSpec]:
        """The kernels as rendered: a row run's (`self.runs`) for one block of rows."""
        outputs = [(o, k.type_of(o)) for k in self.s.kernels for o in k.outputs]
        nbytes = {o: self.storage.nbytes(o, t) for o, t in outputs}
        self.runs = llvm_rows.row_runs(self.s, nbytes) if self.row_blocks else []
        specs = list(self.s.kernels)
        for run in self.runs:
            specs[run.first : run.last + 1] = run.kernels
        return specs

    def lay_out(self) -> MemoryRequest:
        """Write every kernel and the program function; what they need placed."""
        specs = self.specs()
        self.kernels = [self._kernel(i, k) for i, k in enumerate(specs)]
        self.main = self._main(specs)
        return MemoryRequest.of(  # each value as large as its view (a run's internal: one block)
            self.s,
            lambda o, _: self.view_bytes[o],
            self.scratch,
            together=[range(r.first, r.last + 1) for r in self.runs],
        )

    def tune(self, specs: list[KernelSpec]) -> dict[str, tuple[str, Choice | None]]:
        """How each GEMM of a weight (`llvm_gemm.choose`) and each attention
        (`llvm_attention.choose`) in `specs` runs, by shape. The native candidates compile
        first, all at once across processes (`llvm_workers`): one after the other, their LLVM
        was most of what tuning added to a cold compile. The names each extern call sees are
        those `_kernel` gives it: the kernel's inputs and outputs and whatever the steps
        before it computed."""
        if self.fd != "float32":
            return {}
        gemms: dict[str, tuple[llvm_gemm.WeightGemm, str]] = {}
        attentions: dict[str, tuple[ExternCall, list[llvm_attention.Operand], bool]] = {}
        for k in specs:
            steps = [] if k.empty else split_externs(k, EXTERNS)
            names = {v.name: local(v.name) for v in k.inputs}
            names.update((o, f"out_{o}") for o in k.outputs)
            for i, st in enumerate(steps):
                if isinstance(st, ExternCall):
                    if st.node.op == "matmul":
                        after = (k.outputs, steps[i + 1 :])
                        g = llvm_gemm.weight_gemm(
                            st, list(st.node.inputs), names, self.weights, after
                        )
                        if g is not None:
                            gemms.setdefault(g.key(), (g, st.name))
                    ops = llvm_attention.plan(st) if st.node.op == "sdpa" else None
                    if ops is not None:
                        into = st.node.out.name in names
                        attentions.setdefault(llvm_attention.key(st, ops, into), (st, ops, into))
                    names.setdefault(st.node.out.name, st.node.out.name)
                else:
                    for o in st.outputs:
                        names.setdefault(o, o)
        texts = llvm_gemm.candidate_modules(list(gemms.values()))
        texts += llvm_attention.candidate_modules(list(attentions.values()))
        if texts:
            llvm_workers.compile_all(texts)
        for key, (g, name) in gemms.items():
            self.tuned.setdefault(key, llvm_gemm.choose(g, name, measure=True))
        for key, (e, ops, into) in attentions.items():
            self.tuned.setdefault(key, llvm_attention.choose(e, ops, into, measure=True))
        return self.tuned

    def program(self, arena: Arena) -> LlvmProgram:
        """The driver over `arena`, with the modules `lay_out` emitted."""
        kernels, main = self.kernels, self.main
        natives = sum(isinstance(x, KernelSpec) for _, steps in self.steps for x in steps)
        externs = sum(isinstance(x, ExternCall) for _, steps in self.steps for x in steps)
        natives, externs = natives + self.attentions, externs - self.attentions
        count = len(self.storage.narrow)
        narrow = f"; {count} values stored in 16 bits" if count else ""
        scratch = sum(len(blocks) for blocks in self.scratch.values())
        head = [
            f'"""tilefuse llvm program for {self.g.name} ({self.fd} compute): '
            f"{len(self.s)} kernels as {natives} native calls ({len(self.modules)} distinct "
            f"modules, {self.attentions} of them attention) and {externs} extern calls; "
            f"{len(self.views) - scratch} planned values and {scratch} slots in an arena of "
            f'{arena.size} bytes{narrow}."""',
            "",
            *self._memory(arena),
        ]
        source = "\n".join(head) + "\n" + "".join("\n\n" + k for k in kernels) + "\n\n\n" + main
        prepare = self._prepare(kernels)
        if prepare:
            source += "\n\n\n" + prepare
        inputs = tuple(self.storage.dtype(v.name, v.type) for v in self.g.inputs)
        return LlvmProgram(
            entry_name(self.g.name),
            source + "\n",
            self.modules,
            self.constants,
            self.steps,
            inputs,
            self.storage,
            compiles=self.compiles,
            choices=tuple(self.choices),
        )

    def _prepare(self, kernels: list[str]) -> str:
        """`prepare_weights`, run once before the first call: every weight's GEMM layout (the
        `W.pack`/`W.conv`/`W.winograd` calls of the kernels), largest weight first (Note
        [Preparing weights up front])."""
        params = {local(v.name): v for v in self.g.inputs}
        calls: dict[str, int] = {}
        for node in ast.walk(ast.parse("\n\n".join(kernels))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "W"
                and node.args
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id in params
            ):
                v = params[node.args[0].id]
                calls.setdefault(ast.unparse(node), -self.storage.nbytes(v.name, v.type))
        if not calls:
            return ""
        lines = [f"def {PREPARE}({', '.join(params)}):"]
        lines += [
            f"    # {len(calls)} weight layouts, largest first (Note [Preparing weights up front])"
        ]
        lines += [f"    {call}" for call in sorted(calls, key=lambda c: calls[c])]
        return "\n".join(lines)

    # ---- one kernel: a function over its inputs and outputs

    def _memory(self, arena: Arena) -> list[str]:
        """The arena, then a global view per slot (in kernel order) and per planned value."""
        lines = [
            "# memory: every planned value and every kernel's slots (what extern results and",
            "# parts hand over in) at an offset of one arena; two overlap only if no kernel",
            "# needs both (passes.memory.plan_memory)",
            f"arena = torch.empty({max(arena.size, 1)}, dtype=torch.uint8)",
        ]
        for view, block, shape, dtype in self.views:
            lines.append(f"{view} = view(arena, {shape}, {dtype}, at={arena.offset_of(block)})")
        if self.checks:
            lines += [
                "",
                "# index checks: a native kernel reading index tensors writes (which check + 1,",
                "# an index out of range) into its call site's two words of `checks`, and the",
                "# driver raises (Note [Index checks] in backends/index_maps.py)",
                f"checks = torch.zeros({2 * len(self.checks)}, dtype=torch.int64)",
                "checked = checks.numpy()",
            ]
            for site, sites in enumerate(self.checks):
                lines.append(f"check_{site} = checks[{2 * site} : {2 * site + 2}]")
                lines.append(f"check_{site}_sites = {sites!r}")
        return lines

    def _kernel(self, index: int, k: KernelSpec) -> str:
        params = [local(v.name) for v in k.inputs] + [f"out_{o}" for o in k.outputs]
        lines = [f"def {k.name}({', '.join(params)}):"]
        lines += [f"    # {line}" for line in str(k).splitlines()]
        if k.empty:
            self.steps.append((k.name, []))
            return "\n".join([*lines, "    pass  # every output is empty: nothing to compute"])
        steps = split_externs(k, EXTERNS)
        self.steps.append((k.name, steps))
        names = {v.name: local(v.name) for v in k.inputs}
        names.update((o, f"out_{o}") for o in k.outputs)
        self.kernel_index = index
        for i, st in enumerate(steps):
            if id(st) in self.fused:  # an epilogue the extern call before it computed
                continue
            if isinstance(st, ExternCall):
                lines += self._extern(st, names, (k.outputs, steps[i + 1 :]))
                continue
            for o in st.outputs:
                if o not in names:  # handed to a later part: a slot
                    names[o] = self._slot(o, st.type_of(o))
            ends = [v.name for v in st.inputs] + list(st.outputs)
            m = render_kernel(st, self.fd, self.storage.narrow_in(ends))
            self._add(m)
            args = []
            for p in m.params:
                if p.role == "const":
                    cname = f"c_{p.const.digest}"  # type: ignore[union-attr]
                    array = p.const.array()  # type: ignore[union-attr]
                    if array.dtype.kind == "f":
                        array = array.astype(self.fd)
                    self.constants[cname] = array
                    args.append(cname)
                elif p.role == "status":
                    args.append(f"check_{len(self.checks)}")
                elif p.role != "scratch":
                    args.append(names[p.name])
            lines.append(f"    {m.symbol}(NTHREADS, {', '.join(args)})  # native {st.name}")
            if m.checks:  # Note [Index checks] in backends/index_maps.py
                site = len(self.checks)
                self.checks.append(m.checks)
                lines.append(f"    if checked[{2 * site}]:")
                lines.append(f"        raise index_error(checked, {site}, check_{site}_sites)")
        return "\n".join(lines)

    def _slot(self, value: str, t: TensorType) -> str:
        """A global view of a slot for `value`: arena memory that lives only while the kernel
        being rendered runs. A value that fusion recomputes in two kernels (a mask made by
        `full`, read by every layer's attention) gets a slot, and a view, in each: named after
        the kernel from the second on, so neither shares the other's offset."""
        block, view = f"slot {value}", f"g_{value}"
        if block in self.view_bytes:
            block, view = f"slot {value} k{self.kernel_index}", f"g_{value}_k{self.kernel_index}"
        need = self._view(block, value, t, view)
        self.scratch.setdefault(self.kernel_index, []).append((block, need))
        return view

    def _view(self, block: str, value: str, t: TensorType, view: str | None = None) -> int:
        """Register the global view `view` (default `g_<value>`) of arena block `block`; its
        bytes."""
        self.views.append((view or f"g_{value}", block, t.shape, self.dtype(value, t)))
        self.view_bytes[block] = self.storage.nbytes(value, t)
        return self.view_bytes[block]

    def _extern(
        self, e: ExternCall, names: dict[str, str], after: tuple[tuple[str, ...], list[Step]]
    ) -> list[str]:
        log.debug("%s: %s", e.name, e.library)
        lines = []
        exprs = dict(names)
        for v in e.views:
            exprs[v.out.name] = torch_expr(v, [exprs[i] for i in v.inputs])
        ops = [exprs[i] for i in e.node.inputs]
        n = e.node
        out = n.out.name
        comment = f"  # extern {e.name}: {e.library}"
        persistent = out in names  # a kernel output
        attention = llvm_attention.plan(e) if n.op == "sdpa" and self.fd == "float32" else None
        if attention is not None:
            key = llvm_attention.key(e, attention, persistent)
            how, choice = self.tuned.get(key) or llvm_attention.choose(
                e, attention, persistent, measure=False
            )
            self.choices.append((e.name, choice))
            tuned = f"; chosen: {choice.describe()}" if choice.why != "default" else ""
            if how != "native":
                attention = None
                comment += tuned
        if attention is not None:
            if not persistent:
                names[out] = self._slot(out, n.out.type)
            m = llvm_attention.render_attention(e, attention, num_threads())
            self.attentions += 1
            self._add(m)
            args = [names[p.name] for p in m.params if p.role != "scratch"]
            lines.append(
                f"    {m.symbol}(NTHREADS, {', '.join(args)})  # native attention {e.name}: "
                f"softmax between register-tiled products per head block{tuned}"
            )
            return lines
        if n.op == "conv2d":
            conv = llvm_conv.driver_call(e, ops, names, after, self.weights, self._slot, self.fd)
            if conv is not None:
                call, modules, fused = conv
                for mod in modules:
                    self._add(mod)
                if fused is not None:
                    self.fused.add(id(fused))
                return call
        weight_gemm = None
        if n.op == "matmul":
            weight_gemm = llvm_gemm.weight_gemm(e, ops, names, self.weights, after)
        how, tuned = "matmul", ""
        if weight_gemm is not None and self.fd == "float32":
            how, choice = self.tuned.get(weight_gemm.key()) or llvm_gemm.choose(
                weight_gemm, e.name, measure=False
            )
            if choice is not None:
                self.choices.append((e.name, choice))
                tuned = f"; chosen: {choice.describe()}" if choice.why != "default" else ""
        elif weight_gemm is not None:  # the native matmul is float32's
            how = llvm_gemm.library() or "matmul" if weight_gemm.m > 1 else "matmul"
        if how == "native":
            assert weight_gemm is not None
            call, modules, fused = llvm_gemm.native_call(e, weight_gemm, ops, names, self._slot)
            for mod in modules:
                self._add(mod)
            if fused is not None:
                self.fused.add(id(fused))
            return [line + tuned for line in call]
        if n.op == "matmul" and how != "matmul":
            assert weight_gemm is not None
            call, library = llvm_gemm.packed_call(weight_gemm, ops, how)
            comment = f"  # extern {e.name}: {library} (weights packed once){tuned}"
        elif n.op == "matmul":
            if not persistent:
                names[out] = self._slot(out, n.out.type)
            lines.append(f"    torch.matmul({ops[0]}, {ops[1]}, out={names[out]}){comment}")
            return lines
        elif (
            n.op == "conv2d"
            and MKLDNN_PACKED
            and n.inputs[1] in self.weights
            and self.fd == "float32"
        ):
            types = {v.name: v.type for v in e.inputs} | {v.out.name: v.out.type for v in e.views}
            shape = list(types[n.inputs[0]].shape)
            bias = ops[2] if len(ops) > 2 else "None"
            geometry = (
                ", ".join(str(list(n.attr(a))) for a in ("padding", "stride", "dilation"))
                + f", {n.attr('groups')}"
            )
            call = (
                f"torch.ops.mkldnn._convolution_pointwise({ops[0]}, W.conv({ops[1]}, "
                f"{geometry}, {shape}), {bias}, {geometry}, 'none', [], '')"
            )
            comment = f"  # extern {e.name}: oneDNN convolution (weights reordered once)"
        elif n.op == "conv2d":
            call = (
                f"F.conv2d({', '.join(ops)}, stride={n.attr('stride')}, "
                f"padding={n.attr('padding')}, dilation={n.attr('dilation')}, "
                f"groups={n.attr('groups')})"
            )
        else:
            mask = f", attn_mask={ops[3]}" if len(ops) > 3 else ""
            call = (
                f"F.scaled_dot_product_attention({ops[0]}, {ops[1]}, {ops[2]}{mask}, "
                f"scale={n.attr('scale')}, is_causal={n.attr('is_causal')}, "
                f"enable_gqa={n.attr('enable_gqa')})"
            )
        if persistent:
            lines.append(f"    {names[out]}.copy_({call}){comment}")
        else:
            names[out] = f"x_{out}"
            lines.append(f"    x_{out} = {call}.contiguous(){comment}")
        return lines

    # ---- the program function

    def _main(self, specs: list[KernelSpec]) -> str:
        """The program function; `specs`: the kernels as rendered (a row run's for one block)."""
        g = self.g
        roots = output_roots(g)
        lines = [f"def {entry_name(g.name)}({', '.join(local(v.name) for v in g.inputs)}):"]
        lines += [f"    # {line}" for line in print_graph(g).splitlines()[:1]]
        names = {v.name: local(v.name) for v in g.inputs}
        runs = {j: r for r in self.runs for j in range(r.first, r.last + 1)}

        def memory(i: int) -> None:  # the arena view or the fresh tensor of each output
            k, run = self.s.kernels[i], runs.get(i)
            for o in k.outputs:
                t = specs[i].type_of(o) if run and o in run.internal else k.type_of(o)
                if o not in roots:  # planned: in the arena
                    names[o] = f"g_{o}"
                    self._view(o, o, t)
                else:
                    dtype = self.dtype(o, t)
                    names[o] = local(o)
                    lines.append(f"    {local(o)} = torch.empty({t.shape}, dtype={dtype})")

        for i, k in enumerate(self.s.kernels):
            run = runs.get(i)
            if run is None:
                memory(i)
            elif i == run.first:
                for j in range(run.first, run.last + 1):
                    memory(j)
                lines.append(
                    f"    for r in range(0, {run.rows}, {run.block}):  # {k.name}.."
                    f"{self.s.kernels[run.last].name} in {run.blocks} blocks of {run.block} "
                    "rows (Note [Row blocks])"
                )

            def arg(name: str, run: llvm_rows.RowRun | None = run) -> str:
                return run.rows_of(names[name]) if run and name in run.sliced else names[name]

            args = [arg(v.name) for v in k.inputs] + [arg(o) for o in k.outputs]
            indent = "        " if run else "    "
            lines.append(f"{indent}{k.name}({', '.join(args)})")
        done, chains = set(names), output_chains(g)
        for n in g.nodes:  # outputs that are views (or sources) of kernel outputs
            if n.out.name in done or n.out.name not in chains:
                continue
            names[n.out.name] = local(n.out.name)
            expr = torch_expr(n, [names[i] for i in n.inputs], self)
            lines.append(f"    {local(n.out.name)} = {expr}")
            done.add(n.out.name)
        outs = ", ".join(names[o] for o in g.outputs)
        lines.append(f"    return ({outs},)" if len(g.outputs) == 1 else f"    return ({outs})")
        return "\n".join(lines)


def torch_expr(n: Node, ins: list[str], r: _Renderer | None = None) -> str:
    """A torch expression for a view or source op (views stay views)."""
    op = n.op
    if op == "reshape":
        return f"{ins[0]}.reshape({n.attr('shape')})"
    if op == "permute":
        return f"{ins[0]}.permute({n.attr('dims')})"
    if op == "expand":
        return f"{ins[0]}.expand({n.attr('shape')})"
    if op == "slice":
        d, start, end, step = (n.attr(a) for a in ("dim", "start", "end", "step"))
        return f"{ins[0]}[{':, ' * d}{start}:{end}:{step}]"
    dtype = str(storage_dtype(n.out.type.dtype, r.fd if r else "float32"))
    if op == "full":
        value = n.attr("value")
        value = (
            f"float({str(value)!r})"
            if isinstance(value, float) and not math.isfinite(value)
            else repr(value)
        )
        return f"torch.full({n.out.type.shape}, {value}, dtype={dtype})"
    if op == "arange":
        return f"torch.arange({n.attr('start')}, {n.attr('end')}, {n.attr('step')}).to({dtype})"
    if op == "constant" and r is not None:
        value = n.attr("value")
        array = value.array()
        r.constants[f"c_{value.digest}"] = array.astype(r.fd) if array.dtype.kind == "f" else array
        return f"c_{value.digest}.clone()"
    raise ValueError(f"llvm backend: {op} is not a view or source op")
