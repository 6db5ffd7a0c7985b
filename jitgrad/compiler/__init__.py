"""The compiler front end: `jit`, `jit_grad` and `jit_train_step` (trace once per signature,
build the joint graph, optimise, hand the graph to the Numba backend, generate the call path),
and the eager tape's compiled backward, which it installs into the tape (autodiff never imports
the compiler)."""

from jitgrad.compiler.function import jit, jit_grad, make_graph
from jitgrad.compiler.tape_backward import install_compiled_backprop
from jitgrad.compiler.train_step import jit_train_step

install_compiled_backprop()

__all__ = ["jit", "jit_grad", "jit_train_step", "make_graph"]
