"""`python -m edgekiln`: the same command line as `edgekiln`."""

from edgekiln.interfaces.cli import main

if __name__ == "__main__":
    main()
