"""Layers point down: every import inside jitgrad/ (at module level or inside a function) goes
from a layer to one it may use, never up, and no chain of imports comes back to where it
started. numba and llvmlite are imported by the Numba backend only; mpi4py by the distributed
layer and the backend, numba_mpi by the backend.

The allowed directions (a layer may import itself and the layers listed):

    core                                     avals, dtypes, errors, pytree, config, OpDef,
                                             dispatch, Tensor
    ops        -> core                       the primitives and composites
    ir         -> core                       graph, trace, interpreter, verifier, schedule types
    autodiff   -> core, ops, ir              backprop, vjp, tape, transforms (never the compiler:
                                             the compiled tape backward is installed by jit)
    control    -> core, ops, ir, autodiff    loops and branches: primitives holding graphs, their
                                             gradients, the lax and TensorFlow forms
    lax        -> control, ops               JAX's names (control flow, dynamic slices)
    batching   -> core, ops, ir, autodiff, control
                                             vmap (a loop for ops without a batching rule)
                                             and jacfwd, jacrev, hessian, linearize, vjp
    passes     -> core, ir                   simplify, fold, cse, dce, fuse
    backend    -> core, ir, passes           the Numba backend: emitter, cache, kernels
    compiler   -> core, ops, ir, autodiff, passes, backend, distributed
                                             jit, jit_grad, jit_train_step, signatures,
                                             the call path, the tape's compiled backward
    distributed -> core, ops, optim          MPI data parallelism: the job, collectives on
                                             pytrees, DistributedOptimizer, the launcher
    nn, optim, math -> core, ops             the training library and namespaces
    scipy      -> core, ops                  jax.scipy's names (special functions)
    linalg     -> core, ops                  TensorFlow's tf.linalg namespace
    numpy      -> core, ops, linalg          numpy's names over the ops (jitgrad.numpy)
    checkpoint -> core
    data       -> core, distributed          batches (a rank's shard of each global batch)
    testing    -> core, ops, ir, autodiff
    jitgrad/__init__.py -> anything
"""

from __future__ import annotations

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jitgrad")

ALLOWED = {
    "core": set(),
    "ops": {"core"},
    "ir": {"core"},
    "autodiff": {"core", "ops", "ir"},
    "control": {"core", "ops", "ir", "autodiff"},
    "lax": {"control", "ops"},
    "batching": {"core", "ops", "ir", "autodiff", "control"},
    "passes": {"core", "ir"},
    "backend": {"core", "ir", "passes"},
    "compiler": {"core", "ops", "ir", "autodiff", "passes", "backend", "distributed"},
    "distributed": {"core", "ops", "optim"},
    "nn": {"core", "ops"},
    "optim": {"core", "ops"},
    "math": {"core", "ops"},
    "scipy": {"core", "ops"},
    "linalg": {"core", "ops"},
    "numpy": {"core", "ops", "linalg"},
    "checkpoint": {"core"},
    "data": {"core", "distributed"},
    "testing": {"core", "ops", "ir", "autodiff"},
}
NUMBA_ONLY_IN = "backend"
# Top-level module -> the layers that may import it.
MPI_ONLY_IN = {"mpi4py": {"distributed", "backend"}, "numba_mpi": {"backend"}}


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imported(module: str, node) -> list[str]:
    """The modules an import statement of `module` refers to (a name imported from a package
    counts as its submodule when there is one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if not MODULES[module].endswith("__init__.py"):
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([node.module] if node.module else []))
    targets = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        targets.append(candidate if candidate in MODULES else base)
    return targets


def _imports() -> list[tuple[str, str, int]]:
    """(importer, imported, line) for every import in the package."""
    edges = []
    for module, path in MODULES.items():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges += [
                    (module, target, node.lineno)
                    for target in dict.fromkeys(_imported(module, node))
                ]
    return edges


def layer_of(module: str) -> str:
    """The layer of a jitgrad module: its first package below jitgrad ('root' for
    jitgrad/__init__.py)."""
    parts = module.split(".")
    return "root" if len(parts) == 1 else parts[1]


def _upward(edges) -> list[str]:
    bad = []
    for importer, target, line in edges:
        if not target.startswith("jitgrad"):
            continue
        source_layer, target_layer = layer_of(importer), layer_of(target)
        if source_layer == "root" or source_layer == target_layer:
            continue
        if target_layer not in ALLOWED.get(source_layer, set()):
            bad.append(
                f"{MODULES.get(importer, importer)}:{line}: {importer} "
                f"({source_layer}) imports {target} ({target_layer})"
            )
    return bad


def _cycles(edges) -> list[list[str]]:
    """Strongly connected components of more than one module (import cycles)."""
    graph: dict[str, set] = {m: set() for m in MODULES}
    for importer, target, _ in edges:
        if target in graph and target != importer:
            graph[importer].add(target)
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_belongs_to_a_layer():
    unknown = sorted({layer_of(m) for m in MODULES} - set(ALLOWED) - {"root"})
    assert not unknown, f"modules outside the layers of tests/test_layering.py: {unknown}"


def test_imports_point_down():
    bad = _upward(_imports())
    assert not bad, "imports that point up:\n" + "\n".join(bad)


def test_no_import_cycles():
    cycles = _cycles(_imports())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_numba_is_imported_by_the_backend_only():
    bad = [
        f"{MODULES[i]}:{n}: {t}"
        for i, t, n in _imports()
        if t.split(".")[0] in ("numba", "llvmlite") and layer_of(i) != NUMBA_ONLY_IN
    ]
    assert not bad, "numba outside jitgrad/backend:\n" + "\n".join(bad)


def test_mpi_is_imported_by_the_distributed_layer_and_the_backend_only():
    bad = [
        f"{MODULES[i]}:{n}: {t}"
        for i, t, n in _imports()
        if t.split(".")[0] in MPI_ONLY_IN and layer_of(i) not in MPI_ONLY_IN[t.split(".")[0]]
    ]
    assert not bad, "MPI imported outside its layers:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "importer, target, expected",
    [
        ("jitgrad.core.dispatch", "jitgrad.compiler.function", False),  # up
        ("jitgrad.passes.fuse", "jitgrad.backend.numba.emit", False),  # up
        ("jitgrad.autodiff.tape", "jitgrad.compiler.tape_backward", False),  # sideways-up
        ("jitgrad.compiler.function", "jitgrad.backend.numba.compile", True),  # down
        ("jitgrad.ops.shape", "jitgrad.core.aval", True),  # down
    ],
)
def test_the_rule_itself(importer, target, expected):
    """The checker flags an upward import (so the tests above can fail)."""
    assert (not _upward([(importer, target, 1)])) == expected


def test_the_cycle_finder_itself():
    edges = [
        ("jitgrad.core.aval", "jitgrad.core.dtypes", 1),
        ("jitgrad.core.dtypes", "jitgrad.core.aval", 2),
    ]
    assert _cycles(edges) == [["jitgrad.core.aval", "jitgrad.core.dtypes"]]
