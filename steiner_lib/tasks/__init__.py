"""Task domains.

countdown: the arithmetic search domain (rules, exact solver, reference search, verifier,
           problem generator).
choice:    four-choice questions in GPQA's CSV schema, the Countdown benchmark and its splits.
text:      the step texts of the Countdown domain in Steiner's SFT template, and their inverse.

Import the submodules directly (`from steiner_lib.tasks import countdown`); this package
file imports nothing so that `countdown` stays free of pandas.
"""
