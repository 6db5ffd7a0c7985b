"""The seeds' toy function f(w1, w2) = 3 w1^2 + 2 w1 w2, differentiated at (5, 3).

Run: python examples/quickstart.py
"""

import jitgrad


def f(w1, w2):
    return 3 * w1**2 + 2 * w1 * w2


# 1. Finite differences, as the seed does it: one extra call of f per parameter.
w1, w2 = 5, 3
eps = 1e-6
fd = [(f(w1 + eps, w2) - f(w1, w2)) / eps, (f(w1, w2 + eps) - f(w1, w2)) / eps]

# 2. The eager tape (TensorFlow's GradientTape semantics).
v1, v2 = jitgrad.Variable(5.0), jitgrad.Variable(3.0)
with jitgrad.GradientTape() as tape:
    z = f(v1, v2)
gradients = tape.gradient(z, [v1, v2])
print("tape gradients:", gradients)

# 3. tfe-style gradients_function.
print("gradients_function:", [float(g) for g in jitgrad.gradients_function(f)(5.0, 3.0)])

# 4. The compiler: value and both gradients from ONE compiled Numba kernel.
value_and_grads = jitgrad.jit_grad(f, wrt=(0, 1))
value, (g1, g2) = value_and_grads(5.0, 3.0)
print(f"jit_grad: value {float(value):g}, gradients ({float(g1):g}, {float(g2):g})")

for name, g, estimate in zip(["df/dw1", "df/dw2"], gradients, fd):
    print(f"{name} = {float(g):g}   (finite differences: {estimate!r})")
