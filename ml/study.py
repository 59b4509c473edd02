"""``python -m ml.study``: fine-tune under every freeze policy and tabulate (see ml.training.study)."""
import sys

from ml.training.study import main

if __name__ == "__main__":
    sys.exit(main())
