"""The report of the reproduction (notebook 08 and the Quarto book): figures, the summary, the book.

Every figure the notebooks show (plots); the claims table and the reproducibility statement, read
from a run's manifests (summary); and the book over the executed notebooks, prepared, checked and
rendered by `python -m steiner_lib report` (book). Import the modules themselves
(`from steiner_lib.report import plots`): this file imports nothing.
"""
