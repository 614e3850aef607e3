"""The data half of the paper (notebooks 01 and 02): backtracking data synthesis and the reasoning DAGs.

A teacher continues a cut shortcut solution, goes wrong and backtracks once told the answer
(teachers, synthesis, with the state-carrying steps of traces); the steps of each question are
clustered into one DAG, backtracking paths are sampled from it and filtered into the training data
(dag, dataset); dagview shows one DAG in the report. Import the modules themselves
(`from steiner_lib.data import dag`): this file imports nothing.
"""
