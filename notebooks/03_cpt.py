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
# # The base model, and continual pre-training with the 14 reasoning tokens
#
# **In the paper.** Steiner starts from Qwen2.5-Instruct, adds 14 special tokens, and
# continues pre-training (CPT) on a mix of regular text and the sampled reasoning paths, so
# that the new tokens get meaningful embeddings and the model sees long reasoning before
# SFT. The author notes CPT "might be redundant" in small-model tests.
#
# **Here.** At CPU scale a *base model* stands in for Qwen2.5-Instruct: a small
# Qwen2-architecture model trained from scratch on regular text plus **shortcut**
# (forward-only) solutions written as plain chat text, never on a backtracking path and
# never with a reasoning token. The regular text is the Python documentation that ships with
# the standard library (`pydoc_data.topics`, PSF licence). With `model_name_or_path` set,
# a real base model is loaded instead and the 14 tokens are added (each new row initialised
# as the mean embedding of a short description of the token, which keeps it inside the
# distribution of trained rows). CPT then trains on the mix; `cpt_enabled: false` skips it,
# so the evaluation can test the paper's remark.

# %% tags=["parameters"]
run_name = "cpu"
run_seed = 0
run_root = "runs"
model_name_or_path = None
model_hidden_size = 128
model_num_layers = 4
model_num_heads = 4
model_num_kv_heads = 2
model_intermediate_size = 512
model_max_position_embeddings = 2048
model_tie_word_embeddings = True
model_lora = False
model_lora_r = 16
model_dtype = "float32"
base_steps = 700
base_batch_size = 8
base_seq_len = 512
base_learning_rate = 0.003
base_shortcut_copies = 2
base_fact_copies = 60
base_list_drills = 60000
base_option_drills = 0
cpt_enabled = True
cpt_steps = 450
cpt_batch_size = 8
cpt_seq_len = 512
cpt_learning_rate = 0.001
cpt_gradient_accumulation = 1
cpt_reasoning_share = 0.5
cpt_heldout_share = 0.05
cpt_replay_base_corpus = False

# %%
# Setup: validate the params, open this stage, read the questions (01) and the paths and tokenizer (02).
import datasets
from IPython.display import display

from steiner_lib import stages
from steiner_lib.data import dataset
from steiner_lib.format import SPECIAL_TOKENS
from steiner_lib.report import plots
from steiner_lib.tasks import knowledge
from steiner_lib.training import checkpoints, modeling, pretraining

cfg, stage, figures = stages.open_notebook_stage("03_cpt", globals(), inputs=("01_synthesis", "02_dag"))
train_questions = dataset.load_countdown_questions(stage.input_dirs["01_synthesis"] / "train.csv")
paths = datasets.load_from_disk(str(stage.input_dirs["02_dag"] / "paths"))
tokenizer = checkpoints.load_tokenizer(stage.input_dirs["02_dag"] / "tokenizer")
regular = modeling.regular_text()
answer_format = stage.input_params("01_synthesis").task.answer_format  # the visible answers 02 wrote
print(f"{len(train_questions)} training questions, {len(paths)} reasoning paths, {len(regular)} regular documents")

# %% [markdown]
# ## The base model
#
# Built here (or loaded by name). Its corpus: regular text plus `base_shortcut_copies`
# forward-only solutions per training question, each a ChatML exchange whose answer is the
# chain of operations and the letter. Five percent of the texts are held out.
#
# A real base model also arrives knowing arithmetic and how to copy numbers from its context.
# The stand-in gets that knowledge as plain text (`steiner_lib.tasks.knowledge`): the table of
# every legal operation `a op b = r` over the values the task reaches (up to the cap on results
# the questions state), `base_fact_copies` times in fresh orders with 5% of the facts held out,
# and `base_list_drills` drills that copy a list of numbers, sort it, or take two numbers out of
# it. An instruct model also reads a multiple-choice list: given a value, it names the letter of
# the option that holds it. `base_option_drills` drills teach that: four options, a few worked
# lines, a value and the visible answer that names its option, in the format of 02's answers
# (`task_answer_format`). No reasoning token and no search appears in any of it.

# %%
if cfg.model.name_or_path:
    base, tokenizer, added = modeling.load_pretrained_model(cfg.model.name_or_path, dtype=cfg.model.dtype)
    base_result = None
    print(f"loaded {cfg.model.name_or_path}; added {len(added)} token rows")
else:
    base = modeling.build_model(tokenizer, checkpoints.model_config(cfg.model), seed=cfg.run.seed)
    known = knowledge.corpus_for_questions(train_questions.values(), cfg.base.fact_copies, cfg.base.list_drills,
                                           seed=cfg.run.seed, n_option_drills=cfg.base.option_drills,
                                           answer_format=answer_format)
    corpus = pretraining.base_corpus(regular, list(train_questions.values()), seed=cfg.run.seed,
                                     copies=cfg.base.shortcut_copies, extra=known.texts, answer_format=answer_format)
    train_texts, heldout_texts = pretraining.split_heldout(corpus, 0.05, seed=cfg.run.seed)
    base_cfg = pretraining.LMTrainConfig(max_steps=cfg.base.steps, batch_size=cfg.base.batch_size,
                                         seq_len=cfg.base.seq_len, learning_rate=cfg.base.learning_rate,
                                         eval_every=max(1, cfg.base.steps // 5), seed=cfg.run.seed)
    base_result = pretraining.train_lm(base, tokenizer, train_texts, heldout_texts, base_cfg)
    print(f"{modeling.count_parameters(base):,} parameters; {base_result.tokens_per_second:,.0f} tokens/s")
    # The base never saw the 14 tokens: start their rows as a hub base's added tokens start.
    modeling.init_token_embeddings(base, tokenizer, SPECIAL_TOKENS)
checkpoints.save_checkpoint(base, tokenizer, stage.path("base"))

# %% [markdown]
# What the base model knows (@tbl-base-knowledge): greedy answers to arithmetic facts it read and
# to facts held out of its corpus, to copy, sort and take drills on fresh lists, and to option
# drills; "question prompt: letter of a written value" gives it a training question's prompt
# (its options shuffled by a seed the corpus never used), the solver's steps and value, lets it
# write the rest of the answer and reads its letter (chance 25%). The last rows split the facts it
# read by operation. A step of the later stages is valid only when its operation's numbers are
# copied right and its result is right, so these rows bound what SFT can reach.

# %%
#| label: tbl-base-knowledge
#| tbl-cap: "The base model's domain knowledge: accuracy of greedy, exact answers (95% bootstrap CIs over items)."
if base_result is not None:
    knowledge_table = pretraining.knowledge_report(base, tokenizer, known, seed=cfg.run.seed,
                                                   questions=train_questions.values(), answer_format=answer_format)
    display(knowledge_table.round(3))
else:
    knowledge_table = None
    print(f"{cfg.model.name_or_path} is a pretrained base: it brings its own knowledge")

# %% [markdown]
# ## Continual pre-training
#
# The CPT corpus mixes regular text and notebook 02's reasoning paths (full ChatML texts with
# the 14 tokens) at `cpt_reasoning_share` of the tokens, sized to the step budget. Whole
# questions and whole documents are held out before the mix is drawn; the held-out loss is
# tracked separately on regular text and on reasoning text. With `cpt_replay_base_corpus` the
# regular half is the built base's own corpus (regular text, the domain knowledge and the
# shortcut solutions), the replay of pre-training data that keeps CPT from erasing what the
# base learnt; a hub base brings no corpus of ours and replays regular text.

# %%
before_cpt = pretraining.input_embeddings(base)  # the embedding matrix only, not a second model
model = checkpoints.maybe_lora(base, cfg.model)
cpt_result = None
replays_base_corpus = cfg.cpt.enabled and cfg.cpt.replay_base_corpus and base_result is not None
if cfg.cpt.enabled:
    # Tokens for the step budget (at least a few batches, so tiny presets still fill blocks).
    budget = max(cfg.cpt.steps, 16) * cfg.cpt.batch_size * cfg.cpt.gradient_accumulation * cfg.cpt.seq_len
    pools = pretraining.cpt_pools(paths, train_texts if replays_base_corpus else regular, cfg.cpt.heldout_share,
                                  seed=cfg.run.seed)
    mix = pretraining.cpt_corpus(pools["regular_train"], pools["reasoning_train"], cfg.cpt.reasoning_share,
                                 n_tokens_hint=budget, seed=cfg.run.seed, tokenizer=tokenizer)
    display(mix.table())
    heldout = {"regular": pools["regular_heldout"], "reasoning": pools["reasoning_heldout"]}
    cpt_cfg = pretraining.LMTrainConfig(max_steps=cfg.cpt.steps, batch_size=cfg.cpt.batch_size, seq_len=cfg.cpt.seq_len,
                                        gradient_accumulation_steps=cfg.cpt.gradient_accumulation,
                                        learning_rate=cfg.cpt.learning_rate, eval_every=max(1, cfg.cpt.steps // 5),
                                        seed=cfg.run.seed)
    cpt_result = pretraining.train_lm(model, tokenizer, mix.texts, {k: v for k, v in heldout.items() if v}, cpt_cfg)
else:
    print("CPT skipped (cpt_enabled: false): the base model goes to SFT as it is.")
checkpoints.save_checkpoint(model, tokenizer, stage.path("cpt"))

# %% [markdown]
# What the model still knows after CPT (@tbl-knowledge-after-cpt): the same probes as
# @tbl-base-knowledge. CPT trains on reasoning paths and regular text; a row that falls here is
# knowledge CPT erased before SFT could use it.

# %%
#| label: tbl-knowledge-after-cpt
#| tbl-cap: "The base model's domain knowledge before and after CPT: accuracy of greedy, exact answers (95% bootstrap CIs over items), the same probes."
if knowledge_table is not None and cpt_result is not None:
    cpt_knowledge_table = pretraining.knowledge_report(model, tokenizer, known, seed=cfg.run.seed,
                                                       questions=train_questions.values(), answer_format=answer_format)
    display(pretraining.knowledge_comparison({"base": knowledge_table, "after CPT": cpt_knowledge_table}).round(3))
else:
    cpt_knowledge_table = None
    print("no comparison: " + ("CPT was skipped" if cpt_result is None else "a pretrained base brings its own knowledge"))

# %% [markdown]
# @fig-cpt-loss shows the training curves: the base model on its corpus, and CPT on the mix,
# with the held-out loss on each kind of text.

# %%
#| label: fig-cpt-loss
#| fig-cap: "Loss curves (cross-entropy per token). Left: the base model's pre-training (regular text and shortcut solutions). Right: continual pre-training on the mix, held-out loss on regular text and on reasoning paths apart."
fig = plots.loss_curves({"base model pre-training": base_result.history if base_result else None,
                         "continual pre-training": cpt_result.history if cpt_result else None})
fig.savefig(figures / "cpt-loss.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## What CPT did to the 14 token embeddings
#
# Before CPT the base model has never seen a reasoning token: each row starts as the mean of
# the rows of a short description of the token (the same initialisation a hub base model's
# added tokens get). @fig-token-embeddings and the table below show
# each row's norm before and after, how far it turned, and its nearest ordinary tokens.

# %%
#| label: tbl-token-embeddings
#| tbl-cap: "The 14 reasoning-token embeddings before and after CPT: norms, cosine between the two vectors, and nearest ordinary tokens (cosine) before and after."
after = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
embeddings = pretraining.embedding_report(before_cpt, pretraining.input_embeddings(after), tokenizer, k=4)
display(embeddings)

# %%
#| label: fig-token-embeddings
#| fig-cap: "The 14 reasoning-token embeddings: L2 norms before and after CPT (left) and the cosine between each row's before and after vectors (right; 1 = unchanged)."
fig = plots.embedding_shift(embeddings)
fig.savefig(figures / "token-embeddings.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Save

# %%
metrics = {"cpt_enabled": cfg.cpt.enabled, "cpt_replays_base_corpus": replays_base_corpus,
           "parameters": modeling.count_parameters(after)}
if knowledge_table is not None:
    metrics.update(pretraining.knowledge_metrics(knowledge_table, "base"))
if cpt_knowledge_table is not None:
    metrics.update(pretraining.knowledge_metrics(cpt_knowledge_table, "cpt"))
for name, result in (("base", base_result), ("cpt", cpt_result)):
    if result is not None:
        metrics.update({f"{name}_{k}": v for k, v in result.summary().items()})
manifest = stage.finish(metrics=metrics)
print(f"wrote {stage.dir} in {manifest['wall_time_s']} s")

# %% [markdown]
# ## Exercises
#
# As in chapter 1 (`cp -r runs/cpu runs/ex` once), then
#
# ```sh
# jupytext --to ipynb --set-kernel python3 notebooks/03_cpt.py
# papermill notebooks/03_cpt.ipynb runs/ex/executed/03_cpt.ipynb -f params/cpu.yaml -p run_name ex -p cpt_reasoning_share 0.9
# ```
#
# 1. **The CPT mix.** Run with `-p cpt_reasoning_share 0.9`, then `0.1`. In @fig-cpt-loss, what
#    happens to the held-out loss on regular text when almost every token is a reasoning path
#    (forgetting), and to the loss on reasoning paths when almost none are?
# 2. **Is CPT redundant?** The paper suspects so for small models. Copy `params/cpu.yaml` to
#    `params/cpu_no_cpt.yaml`, set `run_name: cpu_no_cpt` and `cpt_enabled: false`, and run the
#    whole pipeline: `python -m steiner_lib run --params params/cpu_no_cpt.yaml` (Papermill,
#    notebook after notebook; about as long as the default run). The claims table of the default
#    run (`make report`) then compares the two runs' RL accuracy, question by question.
# 3. **A smaller model.** Run with `-p model_hidden_size 64 -p model_num_layers 2`. How much do the
#    parameter count and the final losses change? Re-run notebooks 04-06 the same way (with the
#    same `-p run_name ex`) to see whether the evaluation notices.
