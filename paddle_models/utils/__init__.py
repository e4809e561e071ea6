"""Helpers every part of the package uses, written once.

- ``validate``: argument checks with one vocabulary of one-line ``UserError`` messages.
- ``spatial``: the (H, W) of a tensor as python ints where known, shape-tensor entries where a traced graph leaves
  them free.
- ``compat``: workarounds for Paddle versions and for dynamic-to-static tracing.

The one weight loader lives in ``paddle_models.weights``.
"""
