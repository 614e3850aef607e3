"""The evaluation of the paper (notebooks 06 and 07): the stage table and inference-time scaling.

Answer extraction, step validity, bootstrap intervals and paired tests (scoring); every checkpoint
on the same questions, with and without the logits processor (stage_table); accuracy against
reasoning tokens and the tests of the causes the paper suspects (scaling); and the one rule that
turns an interval into a verdict on a claim (verdicts). Import the modules themselves
(`from steiner_lib.evaluation import scoring`): this file imports nothing.
"""
