"""The callback's machinery between SB3 and the store: a cheap in-memory snapshot of the model, and the
committer that hands a prepared iteration to the repository, now or in one background thread.

Internal: import :class:`~sb3_iter_ckpt.callback.IterationCheckpointCallback`.
"""
