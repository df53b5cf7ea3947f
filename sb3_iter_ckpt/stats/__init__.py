"""Pure statistics: trading metrics, overfitting statistics (PSR, DSR, PBO), cross-iteration analysis.

Public paths: :mod:`sb3_iter_ckpt.metrics` and :mod:`sb3_iter_ckpt.overfitting`.
"""
