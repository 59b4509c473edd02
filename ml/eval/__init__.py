"""Evaluation CLI: ``python -m ml.eval verify|identify|detect|embed`` (see ``--help``)."""
