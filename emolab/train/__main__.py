"""``python -m emolab.train ...`` (and ``torchrun --nproc_per_node N -m emolab.train ...``)."""

from emolab.train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
