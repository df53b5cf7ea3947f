"""``python -m sb3_iter_ckpt.cli``: the ``sb3-iter-ckpt`` command (the package itself cannot be run with ``-m``)."""

import sys

from sb3_iter_ckpt.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
