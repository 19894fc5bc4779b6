"""``python -m edgepath`` (and ``torchrun -m edgepath distill …``)."""

from edgepath.cli.main import main

if __name__ == "__main__":
    main()
