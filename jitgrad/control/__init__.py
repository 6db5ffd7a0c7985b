"""Control flow: loops and branches whose bodies are graphs (scan, fori_loop, while_loop, cond,
switch), their gradients, and their JAX and TensorFlow forms."""
