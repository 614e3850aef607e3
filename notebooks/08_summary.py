# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The claims, checked; and how this run was made
#
# This notebook runs last and computes nothing new: it reads what the earlier notebooks of this
# run recorded (each stage's `manifest.json`, the stage tables, the runner's records of each
# executed notebook) and puts it in two places a reader looks first. The results table on the
# opening page of the report is @tbl-claims, embedded from here. A notebook that has not run for
# this run shows as "not run", never as a number.

# %% tags=["parameters"]
run_name = "cpu"
run_seed = 0
run_root = "runs"

# %%
# Setup: validate the params, open this stage (every finished earlier stage is an input), read the run.
from IPython.display import Markdown, display

from steiner_lib.report import summary

cfg, stage, run = summary.open_summary_stage(globals())
print(f"run {run.path.name}: {sum(run.finished(s) for s in run.manifests)} of {len(run.manifests)} notebooks finished")

# %% [markdown]
# ## The paper's claims against this run
#
# One rule (`steiner_lib/evaluation/verdicts.py`) gives every verdict from this run's paired-bootstrap 95%
# interval. A claimed change is *reproduced* when the interval lies on the paper's side of zero,
# *contradicted* when it excludes the paper's effect (wholly at the opposite sign, or short of the
# paper's figure), and *inconclusive* when it holds both zero and the paper's effect. A claimed
# absence of change (the control, inference-time scaling, CPT's redundancy) is reproduced only
# when the interval stays within a margin of zero, the smallest effect the paper reports as a gain
# (3.53 points): a wide interval around zero is inconclusive, not a reproduction. Data-set sizes
# are set by the preset, so they are reported as a share of the paper's, not judged. A claim that
# needs a run this one did not make (CPT's redundancy needs a second run without CPT) is "not run".

# %%
#| label: tbl-claims
#| tbl-cap: "Steiner's claims and this run's measurements: the paper's figure, this run's (points of accuracy with a paired-bootstrap 95% CI and p where the claim is a change), and whether it reproduces. 'where' names the chapter with the evidence."
claims = summary.claims_table(run, no_cpt_run=summary.load_run(run.path.with_name(run.path.name + "_no_cpt")))
summary.show_table(claims)

# %%
display(Markdown(summary.claims_paragraph(claims, run.csv("06_evaluation", "stage_table.csv"))))

# %% [markdown]
# ## Reproducibility statement
#
# Every number in this report came from the notebooks listed in @tbl-notebook-times, run with the
# preset, seed and code commit shown there; @tbl-versions lists the packages each stage recorded
# and @tbl-hardware the machine. Re-running `make report` with the same preset on the same
# versions repeats the run; times vary with the machine and its load.

# %%
#| label: tbl-notebook-times
#| tbl-cap: "Each notebook of this run: wall time of the whole notebook (runner) and of its stage (from opening the stage to its manifest), in seconds; the preset, master seed, params hash and git commit it ran with; when it started."
summary.show_table(summary.notebook_times(run), float_format="{:,.1f}")

# %%
#| label: tbl-versions
#| tbl-cap: "Package versions recorded in the manifests: one version when every finished stage used the same one, each stage's otherwise."
summary.show_table(summary.versions_table(run))

# %%
#| label: tbl-hardware
#| tbl-cap: "The machine that ran this notebook (the stage manifests do not record hardware; a run split over machines shows only the last)."
summary.show_table(summary.hardware_table())

# %% [markdown]
# ## Save

# %%
manifest = stage.finish(metrics={"claims": claims["verdict"].to_dict(), "hardware": summary.hardware()})
print(f"wrote {stage.dir.name} in {manifest['wall_time_s']} s")
