"""Every tokenizer behind one protocol, registered by name.

An adapter module declares ``INFOS`` (static facts, importable without torch)
and a ``load(info, weights_dir, device)`` function; heavy imports happen inside
``load``. ``audiomill --help`` and ``audiomill codecs`` therefore stay fast.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from audiomill.errors import UsageError, WeightsNotFound

if TYPE_CHECKING:
    import torch


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # as Hugging Face hub repositories hold them


# How a codec's clips are batched, every code the same as encoding each clip alone:
BATCHING = {
    "masked": "clips of any length batch together, every code exact: each convolution sees past a "
              "clip's end what it would see for the clip alone (see codecs.masking)",
    "exact-length": "clips batch only with clips of exactly their length (the model's codes depend on "
                    "the whole clip); --batching padded batches any lengths, codes near a clip's end may differ",
}


@dataclass(frozen=True)
class CodecInfo:
    name: str
    module: str
    sample_rate: int
    frame_rates: tuple[float, ...]
    num_codebooks: int
    cardinality: int
    batching: str  # how clips batch with their codes exact: see BATCHING
    extra: str
    hub_id: str | None
    weight_files: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    description: str = ""
    options: tuple[str, ...] = ()  # names accepted by --codec-option
    # what --model-path must hold: groups of alternatives, paths relative to the folder
    # (default: config.json and one of weight_files, as hub repositories of transformers models)
    layout: tuple[tuple[str, ...], ...] = ()

    @property
    def required_files(self) -> tuple[tuple[str, ...], ...]:
        return self.layout or (("config.json",), self.weight_files)

    @property
    def bits_per_second(self) -> float:
        import math

        per_level = self.num_codebooks // len(self.frame_rates)
        return sum(self.frame_rates) * per_level * math.log2(self.cardinality)


def conv_frames(num_samples: int, kernels: list[int], strides: list[int]) -> int:
    """Frames out of a wav2vec2-style convolutional front end (no padding) for ``num_samples`` in
    (HuBERT, wav2vec2, and the semantic branches of Higgs and BiCodec)."""
    length = num_samples
    for kernel, stride in zip(kernels, strides):
        length = max(0, (length - kernel) // stride + 1)
    return length


class Codec(Protocol):
    """What a tokenizer is, to audiomill (after moshi's ``CompressionModel``)."""

    name: str
    sample_rate: int
    frame_rates: list[float]
    num_codebooks: int
    cardinality: int
    batching: str  # see BATCHING
    alignment: int  # window starts and batch buckets are multiples of this many samples

    def batch_key(self, num_samples: int) -> int:
        """Clips with equal keys give the same codes batched as alone (0: any clips, as "masked" codecs)."""

    def frame_hops(self) -> list[int]:
        """Samples per frame of each output level."""

    def num_frames(self, num_samples: int) -> list[int]:
        """Frames per level that ``encode`` returns for a clip of this length."""

    def encode(self, wav: "torch.Tensor", lengths: "torch.Tensor") -> list["torch.Tensor"]:
        """``wav [B, T]`` float32 at ``sample_rate`` -> one int tensor ``[B, T_i]`` per level."""

    def decode(self, codes: list["torch.Tensor"]) -> "torch.Tensor":
        """Codes back to audio ``[B, T]``."""

    # Optional: ``featurizer``, a picklable callable (see audiomill.features.ExtractorFeatures) that
    # turns one clip's samples into the model's inputs, run in the decode processes; then
    # ``encode_features(inputs, lengths)`` takes a batch of them, padded by audiomill.features.collate
    # along ``featurizer.padding``, and returns what ``encode`` would.
    # featurizer: ExtractorFeatures | None

    # Optional: names of per-clip outputs (BiCodec's "global_tokens") that ``encode`` returns
    # after the frame levels, ``[B, N]`` each; written as record fields of those names. A long
    # file's windows share the first window's.
    # clip_fields: tuple[str, ...]


_ADAPTERS = ("audiomill.codecs.snac", "audiomill.codecs.hf", "audiomill.codecs.units", "audiomill.codecs.maskgct",
             "audiomill.codecs.bicodec")


def all_codecs() -> dict[str, CodecInfo]:
    infos: dict[str, CodecInfo] = {}
    for module in _ADAPTERS:
        for info in importlib.import_module(module).INFOS:
            infos[info.name] = info
    return infos


def codec_info(name: str) -> CodecInfo:
    infos = all_codecs()
    if name not in infos:
        raise UsageError(f"unknown codec {name!r}; known: {', '.join(sorted(infos))} (see 'audiomill codecs')")
    return infos[name]


def resolve_weights(info: CodecInfo, model_path: str | None) -> str:
    """The local folder holding ``info``'s weights; fails with one line saying what to pass (see
    :func:`find_weights`)."""
    return find_weights(info.name, info.required_files, info.hub_id, model_path)


def find_weights(name: str, required_files: tuple[tuple[str, ...], ...], hub_id: str | None,
                 model_path: str | None, random_hint: bool = True) -> str:
    """The local folder holding a model's weights (``required_files``: groups of alternatives).

    ``--model-path`` always wins (clusters are offline); otherwise the Hugging Face
    cache is tried, then the hub itself unless ``HF_HUB_OFFLINE`` is set.
    """
    def layout_text() -> str:
        return ", ".join(" or ".join(group) for group in required_files)

    if model_path:
        if not os.path.isdir(model_path):
            raise WeightsNotFound(f"--model-path {model_path} is not a folder")
        for group in required_files:
            if not any(os.path.isfile(os.path.join(model_path, file)) for file in group):
                raise WeightsNotFound(f"--model-path {model_path} has no {' or '.join(group)} "
                                      f"({name} needs {layout_text()})")
        return model_path
    hint = (
        f"no weights for {name}: pass --model-path DIR (a folder with {layout_text()}"
        + (f", as in the hub repository {hub_id}" if hub_id else "")
        + ")" + (", or --random-weights for a test run" if random_hint else "")
    )
    if hub_id is None:
        raise WeightsNotFound(hint)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise WeightsNotFound(hint) from None
    patterns = sorted({file.split("/")[0] + "/*" if "/" in file else file
                       for group in required_files for file in group})
    try:
        return snapshot_download(hub_id, allow_patterns=patterns, local_files_only=True)
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise WeightsNotFound(hint + " (the hub is off: HF_HUB_OFFLINE is set)")
    try:
        return snapshot_download(hub_id, allow_patterns=patterns, etag_timeout=10)
    except Exception as exc:
        raise WeightsNotFound(f"{hint} (the hub could not be reached: {type(exc).__name__})") from None


def load_codec(name: str, weights_dir: str | None, device: str = "cpu", options: dict | None = None) -> Codec:
    """Build the codec; ``weights_dir=None`` means randomly initialised weights (seeded).

    ``options`` are the codec's own settings (``--codec-option bandwidth=6``).
    """
    info = codec_info(name)
    module = importlib.import_module(info.module)
    if info.extra in ("transformers", "bicodec"):  # its "Loading weights" bars would swamp the run's progress
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    return module.load(info, weights_dir, device, options or {})


def find_file(folder: str, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that exists in ``folder`` (a checkpoint may ship any one of them)."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def load_state_dict(folder: str, weight_files: tuple[str, ...]) -> dict[str, Any]:
    """Weights from a local folder without ever unpickling arbitrary objects."""
    import torch

    path = find_file(folder, weight_files)
    if path is None:
        raise WeightsNotFound(f"{folder} has none of {', '.join(weight_files)}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)
