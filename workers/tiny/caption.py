"""A tiny random Qwen3-VL (or Qwen2.5-VL) captioner, built offline (no hub access), for CPU tests.

The processor parts are built from code: ``Qwen2VLImageProcessor`` needs no files (Qwen3-VL
uses it with 16 px patches merged 2x2), and the tokenizer is a ``tokenizers`` WordLevel
vocabulary holding the Qwen chat and vision special tokens plus a few content words. The model
follows the layout of transformers' own Qwen3-VL tests, shrunk to ~100k parameters. Its
answers are random words; the pipeline code path (prompting, image tokens, batching, decoding,
keyword clean-up) is the real one.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
           "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
WORDS = ["stone", "wall", "moss", "tree", "door", "roof", "brick", "sky", "grass", "water",
         "window", "path", "lamp", "rock", "cloud", "fence", "red", "green", "old", "wooden",
         "user", "assistant", "describe", "tile", "keywords", "content", "list", ",", ".", ":",
         "the", "a", "of", "with", "and", "only", "image", "objects", "comma-separated"]


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(["<unk>", *SPECIAL, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))  # noqa: S106
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    special = {"unk_token": "<unk>", "pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"}
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **special)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    return tok


FAMILIES = ("qwen3_vl", "qwen2_5_vl")
PATCH = {"qwen3_vl": 16, "qwen2_5_vl": 14}


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0,
                family: str = "qwen3_vl") -> Any:

    def ids(token: str) -> int:
        found = tokenizer.convert_tokens_to_ids(token)
        assert isinstance(found, int)
        return found

    config = (_qwen3_config if family == "qwen3_vl" else _qwen2_5_config)(ids, len(tokenizer))
    torch.manual_seed(seed)
    cls = (Qwen3VLForConditionalGeneration if family == "qwen3_vl"
           else Qwen2_5_VLForConditionalGeneration)
    model = cls(config)
    with torch.no_grad():  # answer with words: special tokens never win the argmax
        for token in ["<unk>", *SPECIAL]:
            model.lm_head.weight[ids(token)] = 0.0
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    return model.eval()


def _tokens(ids: Any) -> dict[str, Any]:
    return {"image_token_id": ids("<|image_pad|>"), "video_token_id": ids("<|video_pad|>"),
            "vision_start_token_id": ids("<|vision_start|>"),
            "vision_end_token_id": ids("<|vision_end|>")}


def _qwen2_5_config(ids: Any, vocab: int) -> Any:
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 37,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                "mrope_section": [1, 1, 2]},
            "pad_token_id": ids("<|endoftext|>"), "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"),
        },
        vision_config={
            "depth": 2, "hidden_size": 32, "intermediate_size": 37, "num_heads": 4,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "out_hidden_size": 32, "window_size": 56, "fullatt_block_indexes": [1],
        },
        **_tokens(ids),
    )


def _qwen3_config(ids: Any, vocab: int) -> Any:
    return Qwen3VLConfig(
        text_config={
            "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 37,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 8, "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                "mrope_section": [2, 1, 1], "mrope_interleaved": True},
            "pad_token_id": ids("<|endoftext|>"),
        },
        vision_config={
            "depth": 2, "hidden_size": 32, "intermediate_size": 37, "num_heads": 4,
            "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "out_hidden_size": 32, "num_position_embeddings": 16,
            "deepstack_visual_indexes": [0, 1],
        },
        **_tokens(ids),
    )


def build_components(seed: int = 0, family: str = "qwen3_vl") -> dict[str, Any]:
    """Model, tokenizer and image processor of a tiny ``family`` captioner (Qwen3-VL, the
    default, or Qwen2.5-VL with its 14 px patches and windowed vision attention)."""
    tokenizer = build_tokenizer()
    patch = PATCH[family]
    return {
        "model": build_model(tokenizer, seed, family),
        "tokenizer": tokenizer,
        "image_processor": Qwen2VLImageProcessor(
            patch_size=patch, merge_size=2, temporal_patch_size=2,
            min_pixels=32 * 32, max_pixels=448 * 448),
    }
