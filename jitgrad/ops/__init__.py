"""The op set: primitives (OpDefs registered at import) and the public functions over them.

Every public function accepts tensors, tracers, numpy arrays, nested lists and Python scalars,
and has TensorFlow's name and argument names.
"""

import types as _types

from jitgrad.core.tensor import bind_operator_namespace
from jitgrad.ops import bitwise, collective, random
from jitgrad.ops.bitwise import (
    bitwise_and,
    bitwise_or,
    bitwise_xor,
    invert,
    left_shift,
    logical_xor,
    right_shift,
)
from jitgrad.ops.composites import (
    add_n,
    meshgrid,
    reduce_all,
    reduce_any,
    repeat,
    reverse,
    roll,
    sequence_mask,
)
from jitgrad.ops.creation import (
    constant,
    convert_to_tensor,
    eye,
    fill,
    lin_space,
    linspace,
    ones,
    ones_like,
    range,
    zeros,
    zeros_like,
)
from jitgrad.ops.elementwise import (
    abs,
    add,
    arccos,
    arcsin,
    arctan,
    cast,
    ceil,
    clip_by_value,
    cos,
    cosh,
    divide,
    equal,
    erf,
    exp,
    expm1,
    floor,
    floordiv,
    greater,
    greater_equal,
    identity,
    less,
    less_equal,
    log,
    log1p,
    logical_and,
    logical_not,
    logical_or,
    maximum,
    minimum,
    mod,
    multiply,
    negative,
    not_equal,
    pow,
    round,
    rsqrt,
    sigmoid,
    sign,
    sin,
    sinh,
    softplus,
    sqrt,
    square,
    stop_gradient,
    subtract,
    tan,
    tanh,
)
from jitgrad.ops.index import gather, gather_nd, getitem, one_hot, take
from jitgrad.ops.linalg import einsum, matmul, tensordot
from jitgrad.ops.nn import (
    bias_add,
    elu,
    gelu,
    l2_loss,
    leaky_relu,
    log_sigmoid,
    log_softmax,
    logsumexp,
    moments,
    relu,
    relu6,
    selu,
    sigmoid_cross_entropy_with_logits,
    silu,
    softmax,
    softmax_cross_entropy_with_logits,
    softsign,
    sparse_softmax_cross_entropy_with_logits,
    swish,
)
from jitgrad.ops.norms import clip_by_global_norm, clip_by_norm, norm
from jitgrad.ops.random import set_seed
from jitgrad.ops.reduce import (
    argmax,
    argmin,
    reduce_logsumexp,
    reduce_max,
    reduce_mean,
    reduce_min,
    reduce_prod,
    reduce_std,
    reduce_sum,
    reduce_variance,
)
from jitgrad.ops.scatter import IndexUpdates as _IndexUpdates
from jitgrad.ops.scatter import (
    scatter_nd,
    tensor_scatter_nd_add,
    tensor_scatter_nd_max,
    tensor_scatter_nd_min,
    tensor_scatter_nd_sub,
    tensor_scatter_nd_update,
)
from jitgrad.ops.sequences import (
    boolean_mask,
    cumprod,
    cumsum,
    segment_sum,
    unsorted_segment_sum,
    where,
)
from jitgrad.ops.shape import (
    broadcast_to,
    concat,
    expand_dims,
    matrix_transpose,
    pad,
    reshape,
    slice,
    split,
    squeeze,
    stack,
    tile,
    transpose,
    unstack,
)
from jitgrad.ops.sort import argsort, sort
from jitgrad.ops.special import logaddexp

__all__ = [
    name
    for name, value in list(globals().items())
    if not name.startswith("_")
    and name != "bind_operator_namespace"
    and not isinstance(value, _types.ModuleType)
]

import sys as _sys  # noqa: E402

bind_operator_namespace(_sys.modules[__name__])
