"""`python -m mpidml` (and the `mpidml` script): handle signals at once (guard.py), pin
BLAS threads before numpy loads."""
import sys

from mpidml.guard import Guard
from mpidml.threads import pin_blas_threads


def entry():
    Guard().install()
    pin_blas_threads(sys.argv[1:])
    from mpidml.cli import main  # numpy loads here, after the pinning
    return main()


if __name__ == "__main__":
    sys.exit(entry())
