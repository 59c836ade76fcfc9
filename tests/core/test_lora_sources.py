"""The import-by-URL rules (``service.core.lora_sources``): which URLs name which file."""

from __future__ import annotations

import pytest

from service.core.errors import ParamsError
from service.core.lora_sources import check_transport, redact, resolve_source

CIV = "https://civitai.com"
HF = "https://huggingface.co"


@pytest.mark.parametrize(("url", "kind", "download", "metadata", "filename"), [
    ("https://civitai.com/models/929497/aesthetic-quality?modelVersionId=2247497", "civitai",
     f"{CIV}/api/download/models/2247497", f"{CIV}/api/v1/model-versions/2247497", None),
    ("https://civitai.com/models/929497?modelVersionId=2247497", "civitai",
     f"{CIV}/api/download/models/2247497", f"{CIV}/api/v1/model-versions/2247497", None),
    ("https://www.civitai.com/api/download/models/1736373?type=Model&format=SafeTensor",
     "civitai", f"{CIV}/api/download/models/1736373", f"{CIV}/api/v1/model-versions/1736373",
     None),
    ("https://civitai.com/api/v1/model-versions/55", "civitai",
     f"{CIV}/api/download/models/55", f"{CIV}/api/v1/model-versions/55", None),
    ("https://huggingface.co/nerijs/pixel-art-xl/resolve/main/pixel-art-xl.safetensors",
     "huggingface", f"{HF}/nerijs/pixel-art-xl/resolve/main/pixel-art-xl.safetensors", None,
     "pixel-art-xl.safetensors"),
    ("https://huggingface.co/nerijs/pixel-art-xl/blob/v1.0/loras/pixel.safetensors?download=1",
     "huggingface", f"{HF}/nerijs/pixel-art-xl/resolve/v1.0/loras/pixel.safetensors", None,
     "pixel.safetensors"),
    ("http://127.0.0.1:9/civ/models/3?modelVersionId=4", "civitai",
     "http://127.0.0.1:9/civ/api/download/models/4", "http://127.0.0.1:9/civ/api/v1/model-versions/4",
     None),
    # a model page as copied from the address bar: the worker takes its newest version
    ("https://civitai.com/models/12345/some-name", "civitai", None,
     f"{CIV}/api/v1/models/12345", None),
    ("https://civitai.com/models/12345", "civitai", None, f"{CIV}/api/v1/models/12345", None),
])
def test_supported_urls_map_to_their_download(url: str, kind: str, download: str,
                                              metadata: str | None, filename: str | None) -> None:
    src = resolve_source(url, civitai_base="http://127.0.0.1:9/civ") if "127.0.0.1" in url \
        else resolve_source(url)
    assert (src.kind, src.download_url, src.metadata_url, src.filename) == (
        kind, download, metadata, filename)


@pytest.mark.parametrize(("url", "code", "words"), [
    ("https://civitai.com/models/929497/aesthetic?modelVersionId=latest",
     "import_url_unsupported", "modelVersionId is not a number"),
    ("https://civitai.com/user/someone", "import_url_unsupported", "names no model"),
    ("https://huggingface.co/nerijs/pixel-art-xl", "import_url_unsupported", "names no file"),
    ("https://huggingface.co/a/b/resolve/main/model.ckpt", "model_invalid", "safetensors"),
    ("https://huggingface.co/a/b/resolve/main/../../x.safetensors", "import_url_unsupported",
     "'..'"),
    ("https://example.com/lora.safetensors", "import_url_unsupported", "neither"),
    ("ftp://civitai.com/api/download/models/1", "import_url_unsupported", "http(s)"),
    ("http://127.0.0.1:10/civ/models/3?modelVersionId=4", "import_url_unsupported", "neither"),
])
def test_other_urls_are_refused_with_what_to_give_instead(url: str, code: str,
                                                          words: str) -> None:
    with pytest.raises(ParamsError) as info:
        if "127.0.0.1" in url:  # another port than the configured stand-in's
            resolve_source(url, civitai_base="http://127.0.0.1:9/civ")
        else:
            resolve_source(url)
    assert info.value.code == code
    assert words in info.value.message


def test_secrets_in_a_pasted_url_are_dropped() -> None:
    url = "https://user:pw@civitai.com/api/download/models/7?type=Model&token=SECRET123"
    assert redact(url) == "https://civitai.com/api/download/models/7?type=Model"
    assert "SECRET123" not in resolve_source(url).url


@pytest.mark.parametrize(("url", "hosts", "ok"), [
    ("https://civitai.com/x", [], True),
    ("http://civitai.com/x", [], False),
    ("http://127.0.0.1:8080/x", ["127.0.0.1:8080"], True),
    ("http://127.0.0.1:8081/x", ["127.0.0.1:8080"], False),  # the port is part of the entry
    ("http://localhost/x", ["localhost:80"], True),
    ("file:///etc/passwd", ["127.0.0.1:8080"], False),
])
def test_plain_http_only_for_hosts_on_the_allow_list(url: str, hosts: list[str],
                                                     ok: bool) -> None:
    if ok:
        check_transport(url, hosts)
    else:
        with pytest.raises(ParamsError, match="https only") as info:
            check_transport(url, hosts)
        assert info.value.code == "import_url_insecure"


def test_a_model_page_names_the_model_and_no_version() -> None:
    src = resolve_source("https://civitai.com/models/12345/some-name?token=SECRET")
    assert (src.model_id, src.version_id, src.url) == (
        12345, None, "https://civitai.com/models/12345/some-name")
    named = resolve_source("https://civitai.com/models/12345/x?modelVersionId=678")
    assert (named.model_id, named.version_id) == (12345, 678)
