"""The checkpoint store's machinery below the :class:`~sb3_iter_ckpt.repository.CheckpointRepository` facade.

Records index, trust and signing decisions, the write path, derived files, pruning, adoption, integrity,
loading, forward files, the callback's committer, and ``storage/`` (the byte backends). Internal: import
the facade, not these modules.
"""
