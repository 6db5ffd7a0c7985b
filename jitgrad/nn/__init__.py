"""`jitgrad.nn`: neural-network functions (TensorFlow's tf.nn names)."""

from jitgrad.ops.elementwise import sigmoid, softplus, tanh
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

__all__ = [
    "bias_add", "elu", "gelu", "l2_loss", "leaky_relu", "log_sigmoid", "log_softmax", "logsumexp",
    "moments", "relu", "relu6", "selu", "sigmoid", "sigmoid_cross_entropy_with_logits", "silu",
    "softmax", "softmax_cross_entropy_with_logits", "softplus", "softsign",
    "sparse_softmax_cross_entropy_with_logits", "swish", "tanh",
]
