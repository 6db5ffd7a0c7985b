"""jitgrad: automatic differentiation that compiles.

Eager tape (TensorFlow's GradientTape semantics) and function transforms:

>>> import jitgrad
>>> w1, w2 = jitgrad.Variable(5.0), jitgrad.Variable(3.0)
>>> with jitgrad.GradientTape() as tape:
...     z = 3 * w1 ** 2 + 2 * w1 * w2
>>> [float(g) for g in tape.gradient(z, [w1, w2])]
[36.0, 10.0]
"""

import numpy as np

from jitgrad import (
    checkpoint,
    data,
    distributed,
    lax,
    linalg,
    math,
    nn,
    numpy,  # jitgrad.numpy; Tensor's numpy protocols dispatch to it
    optim,
    scipy,
)
from jitgrad import testing as test
from jitgrad.autodiff.tape import GradientTape, UnconnectedGradients, custom_gradient
from jitgrad.autodiff.transforms import (
    grad,
    gradients_function,
    hvp,
    jvp,
    value_and_grad,
    value_and_gradients_function,
)
from jitgrad.batching import hessian, jacfwd, jacrev, linearize, vjp, vmap
from jitgrad.compiler.background import wait_for_compiles
from jitgrad.compiler.function import jit, jit_grad, make_graph
from jitgrad.compiler.tf_function import TensorSpec, function
from jitgrad.compiler.train_step import jit_train_step
from jitgrad.control import shards as _shards  # noqa: F401 - the op the sharding pass makes
from jitgrad.control.api import fori_loop, switch
from jitgrad.control.tf import cond, foldl, foldr, map_fn, scan, while_loop
from jitgrad.core.config import config
from jitgrad.core.dtypes import (
    bool_ as bool,  # noqa: A004 - TensorFlow's name
)
from jitgrad.core.dtypes import (
    float16,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    uint8,
    uint32,
)
from jitgrad.core.errors import JitgradError, LeakedTracerError, TracerError
from jitgrad.core.module import Module
from jitgrad.core.tensor import Tensor
from jitgrad.core.variable import Variable, name_scope
from jitgrad.ir.graph import Graph
from jitgrad.ops import *  # noqa: F403 - the TensorFlow-style top level
from jitgrad.ops import __all__ as _ops_all
from jitgrad.ops import bitwise, image, random
from jitgrad.ops.nn import (
    elu,
    gelu,
    l2_loss,
    leaky_relu,
    log_sigmoid,
    log_softmax,
    logsumexp,
    relu,
    relu6,
    selu,
    sigmoid_cross_entropy_with_logits,
    silu,
    softmax,
    softmax_cross_entropy_with_logits,
    softsign,
    sparse_softmax_cross_entropy_with_logits,
)
from jitgrad.ops.sequences import rank, shape, size  # not in jitgrad.ops: jitgrad.ops.shape

__version__ = "0.1.0"

DType = np.dtype  # jitgrad's dtypes are numpy dtypes

__all__ = sorted(
    set(_ops_all)
    | {
        "GradientTape",
        "bitwise",
        "image",
        "Module",
        "TensorSpec",
        "UnconnectedGradients",
        "function",
        "name_scope",
        "Graph",
        "config",
        "jit",
        "jit_grad",
        "wait_for_compiles",
        "jit_train_step",
        "make_graph",
        "JitgradError",
        "LeakedTracerError",
        "Tensor",
        "TracerError",
        "Variable",
        "bool",
        "custom_gradient",
        "float16",
        "float32",
        "float64",
        "grad",
        "gradients_function",
        "hessian",
        "jacfwd",
        "jacrev",
        "linearize",
        "vjp",
        "vmap",
        "hvp",
        "int8",
        "int16",
        "int32",
        "int64",
        "jvp",
        "math",
        "nn",
        "test",
        "uint8",
        "uint32",
        "random",
        "checkpoint",
        "cond",
        "data",
        "distributed",
        "foldl",
        "foldr",
        "fori_loop",
        "lax",
        "linalg",
        "scipy",
        "map_fn",
        "scan",
        "switch",
        "while_loop",
        "optim",
        "value_and_grad",
        "value_and_gradients_function",
    }
)
