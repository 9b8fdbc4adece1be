"""Textless units: HuBERT / mHuBERT hidden states of one layer, each frame given its nearest k-means centroid.

``--model-path`` is a HuBERT checkpoint folder as transformers saves it (config.json +
model.safetensors, e.g. facebook/hubert-base-ls960 or utter-project/mhubert-147) that
also holds the centroids, ``[clusters, hidden]`` float, as ``kmeans.npy`` or
``kmeans.safetensors`` (tensor ``centroids``). Both load without unpickling anything:
fairseq/sklearn ``.pt``/``.bin``/joblib k-means files are pickles, so convert them once
(``numpy.save("kmeans.npy", km.cluster_centers_)``).

HuBERT normalises its convolutional features over the whole input (group norm) and
attends to all of it, so zero-padding changes every frame: clips are batched only with
clips of exactly the same length, and windows of long files agree with whole-file
units closely, not exactly.
"""

from __future__ import annotations

import os

from audiomill.codecs import WEIGHT_FILES, CodecInfo, conv_frames, find_file
from audiomill.errors import UsageError, WeightsNotFound

CENTROID_FILES = ("kmeans.npy", "kmeans.safetensors")
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=[16] * 7,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)

INFOS = [
    CodecInfo(
        name="hubert-units", module=__name__, sample_rate=16000, frame_rates=(50.0,), num_codebooks=1,
        cardinality=500, batching="exact-length", extra="transformers", hub_id=None, weight_files=WEIGHT_FILES,
        config=dict(layer=9), options=("layer",),
        description="HuBERT/mHuBERT layer-N features -> nearest k-means centroid (kmeans.npy in --model-path); "
                    "--codec-option layer=N (default 9); cardinality is the number of centroids",
    ),
]


def load_centroids(folder: str):
    import numpy as np
    import torch

    path = find_file(folder, CENTROID_FILES)
    if path is None:
        raise WeightsNotFound(f"{folder} has no k-means centroids ({' or '.join(CENTROID_FILES)}, "
                              "[clusters, hidden])")
    if path.endswith(".npy"):
        return torch.from_numpy(np.load(path, allow_pickle=False)).float()
    from safetensors.torch import load_file

    tensors = load_file(path)
    if "centroids" not in tensors:
        raise WeightsNotFound(f"{path} has no tensor named 'centroids'")
    return tensors["centroids"].float()


class HubertUnits:
    batching = "exact-length"
    frame_rates = [50.0]
    num_codebooks = 1

    def __init__(self, model, centroids, layer: int, name: str, device: str) -> None:
        import torch

        self.name = name
        self.device = torch.device(device)
        self.model = model.to(device).eval()
        config = model.config
        if not 0 <= layer <= config.num_hidden_layers:
            raise UsageError(f"{name}: layer={layer}: this model has layers 0 to {config.num_hidden_layers}")
        if centroids.ndim != 2 or centroids.shape[1] != config.hidden_size:
            raise UsageError(f"{name}: centroids of shape {tuple(centroids.shape)} do not fit hidden size "
                             f"{config.hidden_size}")
        self.layer = layer
        self.centroids = centroids.to(device)
        self.cardinality = int(centroids.shape[0])
        self.sample_rate = 16000
        self.kernels = list(config.conv_kernel)
        self.strides = list(config.conv_stride)
        self.hop = 1
        for stride in self.strides:
            self.hop *= stride
        self.alignment = self.hop

    def frame_hops(self) -> list[int]:
        return [self.hop]

    def batch_key(self, num_samples: int) -> int:
        return num_samples

    def num_frames(self, num_samples: int) -> list[int]:
        return [conv_frames(num_samples, self.kernels, self.strides)]

    def features(self, wav):
        hidden = self.model(wav.to(self.device), output_hidden_states=True).hidden_states
        return hidden[self.layer]  # [B, frames, hidden]

    def encode(self, wav, lengths):
        feats = self.features(wav)
        distances = (feats.pow(2).sum(-1, keepdim=True) - 2 * feats @ self.centroids.T
                     + self.centroids.pow(2).sum(-1)[None, None, :])
        return [distances.argmin(-1)]


def random_model(config: dict, seed: int = 0):
    import torch
    from transformers import HubertConfig, HubertModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HubertModel(HubertConfig(**config)).eval()


def save_random(folder: str, clusters: int = 50, config: dict | None = None, layer: int = 2, seed: int = 0) -> str:
    """A tiny random HuBERT in the hub layout, with ``kmeans.npy``: centroids spread over its layer's features."""
    import numpy as np
    import torch

    from audiomill.codecs.hf import spread_rows

    model = random_model(config or TINY, seed)
    model.save_pretrained(folder)
    time = torch.arange(4 * 16000) / 16000
    signal = torch.sin(2 * torch.pi * (150 + 200 * time) * time) * (torch.sin(2 * torch.pi * 2 * time) > 0)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        feats = model(signal[None] + 0.05 * torch.randn(1, len(time)), output_hidden_states=True).hidden_states[layer]
        np.save(os.path.join(folder, "kmeans.npy"), spread_rows(feats[0], clusters).numpy())
    return folder


def load(info: CodecInfo, weights_dir: str | None, device: str, options: dict | None = None) -> HubertUnits:
    from transformers import HubertModel

    options = dict(options or {})
    layer = int(options.pop("layer", info.config["layer"]))
    if options:
        raise UsageError(f"{info.name}: unknown codec option(s) {', '.join(options)}; known: layer")
    if weights_dir is None:
        raise UsageError(f"{info.name} needs --model-path: a HuBERT folder with its k-means centroids (kmeans.npy)")
    centroids = load_centroids(weights_dir)
    model = HubertModel.from_pretrained(weights_dir, use_safetensors=os.path.isfile(
        os.path.join(weights_dir, "model.safetensors")))
    return HubertUnits(model, centroids, layer, info.name, device)


def save_tiny(info: CodecInfo, folder: str) -> str:
    """A tiny random HuBERT and its k-means centroids, in the layout users pass with --model-path: as
    deep as the default ``layer`` needs, so that it runs with the codec's default options."""
    layer = int(info.config["layer"])
    return save_random(folder, config=dict(TINY, num_hidden_layers=max(TINY["num_hidden_layers"], layer)),
                       layer=layer)
