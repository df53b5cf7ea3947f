"""The walk-forward machinery that :mod:`sb3_iter_ckpt.walkforward` drives.

A run's options, the algorithms by name, candidates and the ensemble's choice, the unit of work of one
window, and the executors that schedule it. Internal: the public names are re-exported by
:mod:`sb3_iter_ckpt.walkforward`.
"""
