"""Tests for steiner_lib.training.modeling's models: build, load a 'hub' base and add Steiner's tokens, LoRA, FLOPs.

Every model is built here and saved to tmp_path; nothing is ever fetched from a hub.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub access, ever

import pytest  # noqa: E402
import torch  # noqa: E402

from steiner_lib.format import SPECIAL_TOKENS  # noqa: E402
from steiner_lib.training import modeling  # noqa: E402

TINY = modeling.ModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                            max_position_embeddings=128)


def plain_tokenizer(specials: list[str], eos: str, vocab_size: int = 300):
    """A byte-level BPE tokenizer that knows only `specials`: a stand-in for a hub base's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(modeling.regular_text()[:20], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=specials[0])


def save_base(path, tokenizer, tie: bool = True, seed: int = 0):
    cfg = modeling.ModelConfig(**{**TINY.__dict__, "tie_word_embeddings": tie})
    model = modeling.build_model(tokenizer, cfg, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def description_mean(weight: torch.Tensor, tokenizer, token: str) -> torch.Tensor:
    ids = tokenizer(modeling.TOKEN_DESCRIPTIONS[token], add_special_tokens=False)["input_ids"]
    return weight[ids].mean(0)


# ---------------------------------------------------------------------------- build_model


def test_build_model_matches_the_config_and_the_tokenizer():
    tok = modeling.train_bpe_tokenizer(modeling.regular_text()[:20], 400)
    model = modeling.build_model(tok, TINY, seed=0)
    c = model.config
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers) == (len(tok), 32, 2)
    assert (c.num_attention_heads, c.num_key_value_heads, c.intermediate_size) == (4, 2, 64)
    assert c.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert c.eos_token_id == model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    same = modeling.build_model(tok, TINY, seed=0)
    other = modeling.build_model(tok, TINY, seed=1)
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, same.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, other.model.layers[0].mlp.up_proj.weight)
    ids = tok(["Answer: B"], return_tensors="pt")["input_ids"]
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(out.loss)
    assert modeling.build_model(tok, modeling.ModelConfig(**{**TINY.__dict__, "dtype": "bfloat16"})).dtype \
        == torch.bfloat16


def test_model_config_rejects_shapes_that_cannot_work():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        modeling.ModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        modeling.ModelConfig(num_heads=4, num_kv_heads=3)


# ---------------------------------------------------------------------------- load_pretrained_model


@pytest.mark.parametrize("tie", [True, False])
def test_loading_a_base_without_the_reasoning_tokens_adds_them(tmp_path, tie):
    base_tok = plain_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos="<|im_end|>")
    base = save_base(tmp_path / "base", base_tok, tie=tie)
    old_rows = base.get_input_embeddings().weight.shape[0]
    assert not any(t in base_tok.get_vocab() for t in SPECIAL_TOKENS)

    model, tok, added = modeling.load_pretrained_model(str(tmp_path / "base"))

    assert list(added) == list(SPECIAL_TOKENS)
    assert all(tok.convert_tokens_to_ids(t) == row for t, row in added.items())
    assert all(len(tok(t, add_special_tokens=False)["input_ids"]) == 1 for t in SPECIAL_TOKENS)
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok) == old_rows + 14
    old_in = base.get_input_embeddings().weight
    old_out = base.get_output_embeddings().weight
    assert torch.equal(emb[:old_rows], old_in)  # the old rows are untouched
    for token, row in added.items():
        torch.testing.assert_close(emb[row], description_mean(old_in, tok, token))
        torch.testing.assert_close(model.lm_head.weight[row], description_mean(old_out, tok, token))
        # a mean of existing rows stays inside their cloud: no larger than the largest of them
        assert emb[row].norm() <= old_in.norm(dim=1).max()
    if tie:
        assert model.lm_head.weight.data_ptr() == emb.data_ptr()
    else:
        assert model.lm_head.weight.data_ptr() != emb.data_ptr()
    ids = tok([f"{SPECIAL_TOKENS[0]} start"], return_tensors="pt")["input_ids"]
    out = model(input_ids=ids, labels=ids)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.get_input_embeddings().weight.grad[added[SPECIAL_TOKENS[0]]].abs().sum() > 0


def test_a_base_without_chat_tokens_gets_them_and_im_end_becomes_eos(tmp_path):
    base_tok = plain_tokenizer(["<|endoftext|>"], eos="<|endoftext|>")  # a GPT-2-like base
    save_base(tmp_path / "base", base_tok)
    model, tok, added = modeling.load_pretrained_model(str(tmp_path / "base"))
    assert list(added) == ["<|im_start|>", "<|im_end|>", *SPECIAL_TOKENS]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert model.config.eos_token_id == model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True) == modeling.chat_text("hi")


def test_save_and_reload_round_trips(tmp_path):
    save_base(tmp_path / "base", plain_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "<|im_end|>"))
    model, tok, added = modeling.load_pretrained_model(str(tmp_path / "base"))
    model.save_pretrained(tmp_path / "steiner")
    tok.save_pretrained(tmp_path / "steiner")

    again, tok2, added2 = modeling.load_pretrained_model(str(tmp_path / "steiner"))
    assert added2 == {}  # nothing left to add
    assert tok2.get_vocab() == tok.get_vocab() and tok2.eos_token == tok.eos_token
    state, state2 = model.state_dict(), again.state_dict()
    assert state.keys() == state2.keys()
    assert all(torch.equal(state[k], state2[k]) for k in state)
    text = f"{SPECIAL_TOKENS[0]}{SPECIAL_TOKENS[4]} 3 + 4 = 7"
    assert tok(text)["input_ids"] == tok2(text)["input_ids"]


@pytest.mark.parametrize("tie", [True, False])
def test_the_params_choose_whether_the_built_model_ties_its_embeddings_and_checkpoints_keep_it(tmp_path, tie):
    from steiner_lib import params as P
    from steiner_lib.training import checkpoints

    p = P.validate({**P.defaults(), "model_hidden_size": 32, "model_num_layers": 1, "model_intermediate_size": 64,
                    "model_tie_word_embeddings": tie}, source="test")
    tok = plain_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "<|im_end|>")
    model = modeling.build_model(tok, checkpoints.model_config(p.model), seed=0)
    shared = lambda m: m.get_output_embeddings().weight.data_ptr() == m.get_input_embeddings().weight.data_ptr()  # noqa: E731
    assert shared(model) == tie and model.config.tie_word_embeddings == tie
    n_params = modeling.count_parameters(model)
    checkpoints.save_checkpoint(model, tok, tmp_path / "stage")
    again, _ = checkpoints.load_checkpoint(tmp_path / "stage")
    assert shared(again) == tie and modeling.count_parameters(again) == n_params
    assert torch.equal(again.get_output_embeddings().weight, model.get_output_embeddings().weight)


def test_the_dtype_is_chosen_by_the_params_and_carried_by_every_checkpoint(tmp_path):
    from steiner_lib.training import checkpoints

    save_base(tmp_path / "base", plain_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "<|im_end|>"))
    fp32, _, _ = modeling.load_pretrained_model(str(tmp_path / "base"))
    model, tok, added = modeling.load_pretrained_model(str(tmp_path / "base"), dtype="bfloat16")
    assert {p.dtype for p in fp32.parameters()} == {torch.float32}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # no float32 copy on the way
    for token, row in added.items():  # the new rows are initialised in bf16 too
        assert torch.isfinite(model.get_input_embeddings().weight[row].float()).all()
    checkpoints.save_checkpoint(model, tok, tmp_path / "stage")
    again, _ = checkpoints.load_checkpoint(tmp_path / "stage")
    assert {p.dtype for p in again.parameters()} == {torch.bfloat16}  # the next stage keeps the dtype
    with pytest.raises(ValueError, match="model_dtype"):
        modeling.load_pretrained_model(str(tmp_path / "base"), dtype="float64")


def test_a_base_that_already_has_the_tokens_is_left_alone(tmp_path):
    tok = modeling.train_bpe_tokenizer(modeling.regular_text()[:20], 400)  # has all 17 tokens
    base = save_base(tmp_path / "base", tok)
    model, tok2, added = modeling.load_pretrained_model(str(tmp_path / "base"))
    assert added == {} and len(tok2) == len(tok)
    assert torch.equal(model.get_input_embeddings().weight, base.get_input_embeddings().weight)


def test_every_added_token_has_a_description_that_tokenizes_into_plain_text():
    assert set(modeling.TOKEN_DESCRIPTIONS) == set(SPECIAL_TOKENS) | set(modeling.CHAT_TOKENS)
    tok = modeling.train_bpe_tokenizer(modeling.regular_text()[:20], 400)
    specials = set(tok.all_special_ids)
    for text in modeling.TOKEN_DESCRIPTIONS.values():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids and not specials & set(ids)


def test_init_token_embeddings_names_the_fix_for_unknown_tokens():
    tok = modeling.train_bpe_tokenizer(modeling.regular_text()[:20], 400)
    model = modeling.build_model(tok, TINY)
    with pytest.raises(ValueError, match="not in the tokenizer"):
        modeling.init_token_embeddings(model, tok, ["<|never_added|>"])
    with pytest.raises(ValueError, match="no description"):
        modeling.init_token_embeddings(model, tok, [SPECIAL_TOKENS[0]], descriptions={})


# ---------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize("tie", [True, False])
def test_lora_keeps_the_embeddings_trainable_and_the_model_trains(tie):
    tok = modeling.train_bpe_tokenizer(modeling.regular_text()[:20], 400)
    base = modeling.build_model(tok, modeling.ModelConfig(**{**TINY.__dict__, "tie_word_embeddings": tie}), seed=0)
    ids = tok([f"{SPECIAL_TOKENS[3]} back to the start"], return_tensors="pt")["input_ids"]
    before = base(input_ids=ids).logits.detach()
    model = modeling.wrap_lora(base, r=4, alpha=8, dropout=0.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n and "q_proj" in n for n in trainable)
    assert any("lora_B" in n and "down_proj" in n for n in trainable)
    assert not any("base_layer" in n for n in trainable)  # the projections themselves stay frozen
    assert modeling.count_parameters(model, trainable_only=True) < modeling.count_parameters(model)
    emb = model.get_input_embeddings().modules_to_save["default"].weight
    head = model.get_output_embeddings().modules_to_save["default"].weight
    assert emb.requires_grad and head.requires_grad
    assert (head is emb) == tie  # PEFT keeps the trainable copies tied when the model was tied

    out = model(input_ids=ids, labels=ids)
    torch.testing.assert_close(out.logits, before)  # LoRA starts as the identity (B = 0)
    out.loss.backward()
    row = tok.convert_tokens_to_ids(SPECIAL_TOKENS[3])
    assert emb.grad[row].abs().sum() > 0 and head.grad.abs().sum() > 0
    lora_b = next(p for n, p in model.named_parameters() if "lora_B" in n)
    assert lora_b.grad is not None and lora_b.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- counts


def test_flops_per_token_matches_a_hand_count():
    tok = modeling.train_bpe_tokenizer(modeling.regular_text()[:20], 400)
    cfg = modeling.ModelConfig()  # the default model: hidden 128, 4 layers, 4 heads, 2 kv heads
    model = modeling.build_model(tok, cfg)
    h, layers, inter, vocab, seq = 128, 4, 512, len(tok), 512
    kv = 2 * (h // 4)  # 2 kv heads of head_dim 32
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter + 2 * h  # q,k,v (bias), o, mlp, norms
    n_params = layers * per_layer + h + vocab * h  # + final norm + tied embedding
    assert modeling.count_parameters(model) == n_params
    # 6 FLOPs per weight in the matmuls (the tied table counts once, as the output projection),
    # plus QK^T and AV: 2 matmuls x 2 FLOPs x T x h per layer, forward; x3 with the backward pass.
    hand = 6 * (layers * (h * h + 2 * h * kv + h * h + 3 * h * inter) + vocab * h) + 3 * 2 * 2 * layers * seq * h
    assert abs(modeling.model_flops_per_token(model, seq) - hand) / hand < 0.10
    untied = modeling.build_model(tok, modeling.ModelConfig(tie_word_embeddings=False))
    assert modeling.count_parameters(untied) == n_params + vocab * h
    # the input table is a lookup: untying adds parameters but no FLOPs
    assert modeling.model_flops_per_token(untied, seq) == modeling.model_flops_per_token(model, seq)


# ---------------------------------------------------------------------------- tokenizer trained here


def test_trained_tokenizer_spells_a_number_with_the_same_digit_tokens_everywhere():
    # Qwen2's pre-tokenizer: single digits, spaces apart, so the number in the question, in a step
    # name and in a backtrack target is the same token sequence (a small model can copy it).
    texts = ["Using some of the numbers 7, 12, 16, 19 and 228, 487 leaves 19 × 12 = 228."] * 40
    tok = modeling.train_bpe_tokenizer(texts, vocab_size=300)
    pieces = lambda s: [tok.decode([i]) for i in tok(s, add_special_tokens=False)["input_ids"]]  # noqa: E731
    assert pieces("numbers 7, 228")[-4:] == [" ", "2", "2", "8"]
    assert pieces("<|reasoning_step_name_start|>228 + 16")[1:4] == ["2", "2", "8"]
    assert pieces("<|reasoning_backtrack|>228 + 16")[1:4] == ["2", "2", "8"]
    text = "Combine 19 and 12: 19 × 12 = 228.\nAnswer: C"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_whole_number_tokenizer_makes_each_frequent_number_one_token_everywhere():
    texts = ["Using some of the numbers 7, 12, 16, 19 and 228, 487 leaves 19 × 12 = 228."] * 40
    tok = modeling.train_bpe_tokenizer(texts, vocab_size=300, numbers="whole")
    pieces = lambda s: [tok.decode([i]) for i in tok(s, add_special_tokens=False)["input_ids"]]  # noqa: E731
    assert pieces("numbers 7, 228")[-2:] == [" ", "228"]  # the space never sticks to the number
    assert pieces("<|reasoning_step_name_start|>228 + 16")[1] == "228"
    assert pieces("<|reasoning_backtrack|>19 × 12")[1:2] == ["19"]
    assert pieces("Combine 19 and 12")[-1] == "12" and pieces("x 2024")[-1] != "2024"  # unseen: BPE pieces
    text = "Combine 19 and 12: 19 × 12 = 228.\nAnswer: C 2024"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    with pytest.raises(ValueError, match="numbers='roman'"):
        modeling.train_bpe_tokenizer(texts, vocab_size=300, numbers="roman")


def test_spaced_number_tokenizer_keeps_the_space_with_the_number():
    # GPT-2's rule: " 228" is one piece, so a list "7, 228" is number tokens between commas.
    texts = ["Using some of the numbers 7, 12, 16, 19 and 228, 487 leaves 19 × 12 = 228."] * 40
    tok = modeling.train_bpe_tokenizer(texts, vocab_size=300, numbers="spaced")
    pieces = lambda s: [tok.decode([i]) for i in tok(s, add_special_tokens=False)["input_ids"]]  # noqa: E731
    assert pieces("numbers 7, 228")[-3:] == [" 7", ",", " 228"]
    assert pieces("<|reasoning_step_name_start|>228 + 16")[1].startswith("2")  # no space before it: other tokens
    text = "Combine 19 and 12: 19 × 12 = 228.\nAnswer: C 2024"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
