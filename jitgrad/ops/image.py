"""`jitgrad.image`: TensorFlow's image adjustments.

`adjust_contrast` is TensorFlow's AdjustContrastv2, which has no gradient: TensorFlow's
autodiff guide uses it to show that `tape.gradient` through such an op raises LookupError
(rather than returning None), and jitgrad does the same (its primitive's VJP is
`NO_GRADIENT`). Wrap its inputs in `stop_gradient` where no gradient is needed.
"""

from __future__ import annotations

from jitgrad.core.aval import AVal
from jitgrad.core.dispatch import bind
from jitgrad.core.errors import op_error
from jitgrad.core.opdef import NO_GRADIENT, defop
from jitgrad.ops import reduce
from jitgrad.ops.base import as_value, broadcast_all


def _adjust_contrast_eval(x, mean, factor):
    if x.dtype.kind != "f":
        raise op_error("adjust_contrast", f"expects float images, got {x.dtype.name}", TypeError)
    if not (x.shape == mean.shape == factor.shape) or not (x.dtype == mean.dtype == factor.dtype):
        raise op_error(
            "adjust_contrast",
            f"images, means and factor must have one shape and dtype after broadcasting, got "
            f"{x.dtype.name}{list(x.shape)}, {mean.dtype.name}{list(mean.shape)}, "
            f"{factor.dtype.name}{list(factor.shape)}",
        )
    return AVal(x.shape, x.dtype)


adjust_contrast_p = defop(
    "adjust_contrast",
    abstract_eval=_adjust_contrast_eval,
    impl=lambda x, mean, factor: (x - mean) * factor + mean,
    vjp=NO_GRADIENT,
    kind="elementwise",
    template="((({0} - {1}) * {2}) + {1})",
    doc="(x - mean) * factor + mean: TensorFlow's AdjustContrastv2, which has no gradient.",
)


def adjust_contrast(images, contrast_factor, name=None):
    """Each channel's values moved away from (factor > 1) or towards its mean over the
    height and width axes: (x - mean) * contrast_factor + mean, on [..., height, width,
    channels] float images.

    >>> jitgrad.image.adjust_contrast([[[0.5, 0.0, 0.0]]], 2.0).numpy()
    array([[[0.5, 0. , 0. ]]], dtype=float32)
    """
    x = as_value(images, op="adjust_contrast")
    if x.dtype.kind != "f" or x.ndim < 3:
        raise op_error(
            "adjust_contrast",
            f"expects float images [..., height, width, channels], got "
            f"{x.dtype.name}{list(x.shape)}",
            TypeError if x.dtype.kind != "f" else ValueError,
        )
    factor = as_value(contrast_factor, dtype=x.dtype, op="adjust_contrast")
    if factor.ndim != 0:
        raise op_error(
            "adjust_contrast", f"contrast_factor must be a scalar, got shape {factor.shape}"
        )
    mean = reduce.reduce_mean(x, axis=(-3, -2), keepdims=True)
    return bind(adjust_contrast_p, *broadcast_all("adjust_contrast", x, mean, factor))
