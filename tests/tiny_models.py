"""Tiny random models and tokenizers built on the fly (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = (
    "no pleural effusion pneumothorax consolidation cardiomegaly heart size normal lungs clear "
    "left right bilateral small moderate large there is are the of and with without mild new "
    "unchanged stable compared prior tube line pacemaker in place lower lobe opacity atelectasis "
    "findings impression indication technique comparison chest x-ray pa lateral . , : n/a"
).split()


def make_tokenizer(path: Path | None = None, chat_template: str | None = None):
    """A word-level fast tokenizer with <pad>, <s>, </s>, <unk> (ids 0–3)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    if chat_template:
        fast.chat_template = chat_template
    if path is not None:
        fast.save_pretrained(path)
    return fast


def llama_config(vocab_size: int, *, hidden: int = 32, layers: int = 3, seed: int = 0):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )


def make_tiny_llama(path: Path | None = None, *, seed: int = 0, layers: int = 3, hidden: int = 32):
    """A random LlamaForCausalLM + tokenizer; saved to `path` (safetensors) when given."""
    from transformers import LlamaForCausalLM

    tok = make_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(len(tok), hidden=hidden, layers=layers)).eval()
    with torch.no_grad():  # larger logits gaps: greedy ties (fp noise) would make tests flaky
        model.lm_head.weight.mul_(8.0)
    if path is not None:
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return model, tok


def make_tiny_llava(seed: int = 0):
    """A random LlavaForConditionalGeneration (CLIP vision tower, Llama text model)."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    tok = make_tokenizer()
    text = llama_config(len(tok) + 1)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                              num_attention_heads=2, image_size=28, patch_size=14, projection_dim=16)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=len(tok))
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(cfg).eval(), tok
