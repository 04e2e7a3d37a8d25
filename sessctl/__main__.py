"""``python -m sessctl``: the same command as the ``sessctl`` script."""

from sessctl.cli import main

if __name__ == "__main__":
    main()
