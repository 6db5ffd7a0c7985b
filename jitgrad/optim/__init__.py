"""`jitgrad.optim`: optimizers (SGD, Adam, AdamW, RMSprop), learning-rate schedules and
global-norm gradient clipping, each traceable so that `jit` compiles a whole update.

>>> opt = optim.Adam(optim.cosine_decay(1e-3, decay_steps=1000), global_clipnorm=1.0)
>>> state = opt.init(params)
>>> params, state = opt.update(params, grads, state)          # functional
>>> opt.apply_gradients(zip(grads, model.trainable_variables))  # TensorFlow style
"""

from jitgrad.optim import schedules
from jitgrad.optim.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop, clip_by_global_norm
from jitgrad.optim.schedules import (
    constant,
    cosine_decay,
    exponential_decay,
    piecewise_constant,
)

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "clip_by_global_norm",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "piecewise_constant",
    "schedules",
]
