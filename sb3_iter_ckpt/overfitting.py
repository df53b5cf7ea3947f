"""Overfitting statistics: PSR, DSR, PBO by CSCV, walk-forward efficiency (public path; the code is
:mod:`sb3_iter_ckpt.stats.overfitting`)."""

from sb3_iter_ckpt.stats.overfitting import *  # noqa: F403
from sb3_iter_ckpt.stats.overfitting import __all__  # noqa: F401
