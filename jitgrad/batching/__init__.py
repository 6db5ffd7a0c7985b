"""Batching and the transforms built on it: vmap, jacfwd, jacrev, hessian, linearize, vjp.

A layer above control (core, ops, ir, autodiff, control): vmap falls back to a loop
(`lax.map`) for ops without a batching rule, and the Jacobians are vmaps of VJPs and JVPs.
"""

from jitgrad.autodiff.tape import install_vmap
from jitgrad.batching.jacobians import hessian, jacfwd, jacrev, linearize, vjp
from jitgrad.batching.vmap import vmap

install_vmap(vmap)  # GradientTape.jacobian / batch_jacobian: one batched backward pass

__all__ = ["hessian", "jacfwd", "jacrev", "linearize", "vjp", "vmap"]
