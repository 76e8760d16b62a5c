"""tgpool's semantics in plain torch, for tensors the Triton kernels do not serve (CPU without the
interpreter): global pooling's reductions and padding="same"."""
