"""Trading metrics over a return series (public path; the code is :mod:`sb3_iter_ckpt.stats.metrics`)."""

from sb3_iter_ckpt.stats.metrics import *  # noqa: F403
from sb3_iter_ckpt.stats.metrics import __all__  # noqa: F401
