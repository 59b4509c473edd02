"""``python -m ml.train``: train or fine-tune a recognizer (see ml.training.train)."""
import sys

from ml.training.train import main

if __name__ == "__main__":
    sys.exit(main())
