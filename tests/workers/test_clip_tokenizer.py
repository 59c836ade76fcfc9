"""Long-prompt chunking on SDXL's real 49,408-token CLIP tokenizers (built offline from the BPE
file in the open-clip-torch wheel), with tiny random text encoders sized for that vocabulary.

The byte-level tokenizer of the other tests gives one token per character; real prompts split
into sub-word tokens, windows fall mid-word, and SDXL's two tokenizers pad differently (EOS and
"!"). Nothing may be cut, every window is BOS + 75 tokens + EOS, and each window encodes as
diffusers' own ``encode_prompt`` encodes that window's text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from workers.tiny import upscale as tiny
from workers.upscale.pipeline import CHUNK, UpscalePipeline, _chunked, _token_ids

BOS, EOS = 49406, 49407
PHRASES = ["highly detailed", "weathered cobblestone courtyard", "mossy bricks", "wrought-iron lanterns",
           "hand-painted texture", "soft ambient occlusion", "isometric tavern interior",
           "glazed terracotta roof tiles", "flickering torchlight", "overgrown ivy"]


@pytest.fixture(scope="module")
def comps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return tiny.build_components(tmp_path_factory.mktemp("real-clip"), real_tokenizers=True)


@pytest.fixture(scope="module")
def ours(comps: dict[str, Any]) -> UpscalePipeline:
    return UpscalePipeline.from_components(comps)


@pytest.fixture(scope="module")
def sdxl(comps: dict[str, Any]) -> Any:
    return StableDiffusionXLPipeline(**{k: v for k, v in comps.items()
                                        if k not in ("controlnet", "image_encoder")},
                                     add_watermarker=False)


def prompt_of(tokenizer: Any, n_tokens: int) -> str:
    """Game-art phrases (multi-token words, commas) padded with one-token words to exactly
    ``n_tokens`` tokens."""
    def count(text: str) -> int:
        return len(_token_ids(tokenizer, text))

    text, i = "", 0
    while count(f"{text}, {PHRASES[i % len(PHRASES)]}") < n_tokens - 3:
        text = f"{text}, {PHRASES[i % len(PHRASES)]}".lstrip(", ")
        i += 1
    while count(text) < n_tokens:
        text += " red"
    assert count(text) == n_tokens
    return text


def test_the_tokenizers_are_sdxls_real_clip_vocabulary(comps) -> None:
    tok, tok_2 = comps["tokenizer"], comps["tokenizer_2"]
    assert len(tok) == len(tok_2) == 49408
    assert tok("a photo of a cat").input_ids == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert (tok.bos_token_id, tok.eos_token_id) == (BOS, EOS)
    assert tok.pad_token_id == EOS and tok_2.pad_token_id == 0  # SDXL pads encoder 2 with "!"
    pieces = tok.convert_ids_to_tokens(_token_ids(tok, "Cobblestone, mossy"))
    assert pieces == ["cobble", "stone</w>", ",</w>", "mo", "ssy</w>"]  # sub-words, lowercased


@pytest.mark.parametrize("n_tokens", [300, 310])
def test_a_long_prompt_is_chunked_into_77_token_windows_without_loss(comps, n_tokens) -> None:
    n_windows = -(-n_tokens // CHUNK)
    for tok in (comps["tokenizer"], comps["tokenizer_2"]):
        ids = _token_ids(tok, prompt_of(tok, n_tokens))
        assert len(ids) == n_tokens  # no cut at 77 while tokenizing
        rows = _chunked(tok, ids, n_windows)
        assert rows.shape == (n_windows, 77)
        assert (rows[:, 0] == BOS).all()
        kept: list[int] = []
        for i, row in enumerate(rows.tolist()):
            body = ids[i * CHUNK:(i + 1) * CHUNK]
            assert row[1:len(body) + 1] == body and row[len(body) + 1] == EOS
            assert row[len(body) + 2:] == [tok.pad_token_id] * (CHUNK - len(body))
            kept += body
        assert kept == ids  # every token in order, each exactly once
        # windows fall inside words: sub-word tokens end the first two
        ends = tok.convert_ids_to_tokens([ids[i * CHUNK - 1] for i in range(1, n_windows)])
        assert ends[:2] == ["clu", "cobble"]  # "occlusion" and "cobblestone" split


def test_each_window_encodes_as_diffusers_encodes_its_text(ours, sdxl, comps) -> None:
    tok = comps["tokenizer"]
    prompt = prompt_of(tok, 300)
    ids = _token_ids(tok, prompt)
    pos, pooled, neg, neg_pooled = ours.encode_prompts([prompt], "blurry, lowres", 2)
    assert pos.shape == neg.shape == (1, 4 * 77, 64)
    with torch.inference_mode():
        whole, whole_neg, whole_pooled, whole_neg_pooled = sdxl.encode_prompt(
            prompt, device="cpu", negative_prompt="blurry, lowres")
    # diffusers cuts the prompt to its first window: exactly our first window and pooled text
    torch.testing.assert_close(pos[:, :77], whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled, whole_pooled, rtol=0, atol=1e-5)
    torch.testing.assert_close(neg[:, :77], whole_neg, rtol=0, atol=1e-5)
    torch.testing.assert_close(neg_pooled, whole_neg_pooled, rtol=0, atol=1e-5)
    for i in range(1, 4):  # the rest of the prompt from window i on, as text
        rest = tok.decode(ids[i * CHUNK:])
        assert _token_ids(tok, rest)[:CHUNK] == ids[i * CHUNK:(i + 1) * CHUNK]
        with torch.inference_mode():
            ref = sdxl.encode_prompt(rest, device="cpu", do_classifier_free_guidance=False)[0]
        torch.testing.assert_close(pos[:, i * 77:(i + 1) * 77], ref, rtol=0, atol=1e-5)
    # the short negative prompt fills the later windows with BOS, EOS and each encoder's pad
    with torch.inference_mode():
        empty = sdxl.encode_prompt("", device="cpu", do_classifier_free_guidance=False)[0]
    torch.testing.assert_close(neg[:, 77:2 * 77], empty, rtol=0, atol=1e-5)


def test_the_last_tokens_of_a_long_prompt_reach_the_embeddings(ours, comps) -> None:
    tok = comps["tokenizer"]
    head = prompt_of(tok, 290)
    a, _, _, _ = ours.encode_prompts([head + " golden sunset haze"], "", 2)
    b, _, _, _ = ours.encode_prompts([head + " frozen moonlit fog"], "", 2)
    assert len(_token_ids(tok, head + " golden sunset haze")) > 4 * CHUNK - 10
    assert torch.equal(a[:, :3 * 77], b[:, :3 * 77])  # the first 225 tokens are the same
    assert not torch.allclose(a[:, 3 * 77:], b[:, 3 * 77:])  # tokens 291+ are not dropped


def test_sdxl_folder_with_the_real_tokenizers_loads_back(comps, tmp_path: Path) -> None:
    """Saved and reloaded the way a baked checkpoint folder is, the tokenizers stay SDXL's."""
    comps["tokenizer_2"].save_pretrained(str(tmp_path / "tokenizer_2"))
    from transformers import CLIPTokenizer

    again = CLIPTokenizer.from_pretrained(str(tmp_path / "tokenizer_2"))
    assert len(again) == 49408 and again.pad_token_id == 0
    text = prompt_of(again, 120)
    assert _token_ids(again, text) == _token_ids(comps["tokenizer_2"], text)
