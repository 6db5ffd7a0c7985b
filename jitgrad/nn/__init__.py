"""`jitgrad.nn`: neural-network functions (TensorFlow's tf.nn names), layers, losses and
initializers (`jitgrad.nn.initializers`)."""

from jitgrad.nn import initializers, losses
from jitgrad.nn.layers import (
    MLP,
    Dense,
    Dropout,
    Embedding,
    Layer,
    LayerNorm,
    Sequential,
    dropout,
    fold_in,
    get_activation,
)
from jitgrad.nn.losses import (
    binary_cross_entropy_with_logits,
    mean_squared_error,
    softmax_cross_entropy,
    sparse_softmax_cross_entropy,
)
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
    "MLP", "Dense", "Dropout", "Embedding", "Layer", "LayerNorm", "Sequential",
    "binary_cross_entropy_with_logits", "dropout", "fold_in", "get_activation", "initializers",
    "losses", "mean_squared_error", "softmax_cross_entropy", "sparse_softmax_cross_entropy",
    "bias_add", "elu", "gelu", "l2_loss", "leaky_relu", "log_sigmoid", "log_softmax", "logsumexp",
    "moments", "relu", "relu6", "selu", "sigmoid", "sigmoid_cross_entropy_with_logits", "silu",
    "softmax", "softmax_cross_entropy_with_logits", "softplus", "softsign",
    "sparse_softmax_cross_entropy_with_logits", "swish", "tanh",
]
