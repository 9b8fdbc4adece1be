"""MaskGCT / IndexTTS2 semantic codes: w2v-BERT 2.0 layer 17, normalised, quantised by RepCodec.

``--model-path`` is a folder laid out as the upstream releases are, three downloads:

- ``w2v-bert-2.0/``: facebook/w2v-bert-2.0 as transformers saves it (config.json,
  model.safetensors, preprocessor_config.json);
- ``semantic_codec/model.safetensors``: amphion/MaskGCT's RepCodec;
- ``wav2vec2bert_stats.pt``: the layer-17 mean and variance (``{"mean", "var"}``) that
  MaskGCT and IndexTTS2 ship; read with ``torch.load(weights_only=True)``, or
  ``wav2vec2bert_stats.safetensors`` with the same two tensors.

RepCodec is written here after its upstream design (Amphion's ``RepCodec``: a Vocos
ConvNeXt encoder, then factorised residual VQ with L2-normalised codebooks) and loads
that checkpoint's own tensor names; its decoder, which rebuilds features rather than
audio, is not needed for codes and is skipped. The architecture's sizes come from the
checkpoint's tensor shapes, so no config file is needed.

The feature extractor normalises filter banks over each clip and w2v-BERT attends to
all of it, so clips are batched only with clips of exactly the same length. The filter
banks are computed in the decode processes (:attr:`MaskGCTSemantic.featurizer`, see
:mod:`audiomill.features`), each clip's from its own samples.
"""

from __future__ import annotations

import os

from audiomill.codecs import CodecInfo, find_file
from audiomill.errors import UsageError, WeightsNotFound
from audiomill.features import ExtractorFeatures, model_inputs

SEMANTIC_MODEL = "w2v-bert-2.0"
CODEC_WEIGHTS = os.path.join("semantic_codec", "model.safetensors")
STATS_FILES = ("wav2vec2bert_stats.pt", "wav2vec2bert_stats.safetensors")
LAYER = 17
# the tiny test architecture: as many w2v-BERT layers as layer 17 needs, everything else small
TINY_SEMANTIC = dict(hidden_size=16, num_hidden_layers=LAYER, num_attention_heads=2, intermediate_size=32,
                     output_hidden_size=16, conv_depthwise_kernel_size=5)
TINY_CODEC = dict(vocos_dim=16, vocos_intermediate_dim=32, vocos_num_layers=2, codebook_size=64, codebook_dim=8)

INFOS = [
    CodecInfo(
        name="maskgct-semantic", module=__name__, sample_rate=16000, frame_rates=(50.0,), num_codebooks=1,
        cardinality=8192, batching="exact-length", extra="transformers", hub_id=None,
        weight_files=(CODEC_WEIGHTS,),
        layout=((os.path.join(SEMANTIC_MODEL, "config.json"),), (CODEC_WEIGHTS,), STATS_FILES),
        description="MaskGCT / IndexTTS2 semantic codes: w2v-BERT 2.0 layer 17, normalised by its stats, "
                    "RepCodec (8192); --model-path with w2v-bert-2.0/, semantic_codec/, wav2vec2bert_stats.pt",
    ),
]


def _backbone():
    """RepCodec's Vocos backbone as a torch module (built on first use: torch is imported lazily)."""
    import torch
    from torch import nn

    class ConvNeXtBlock(nn.Module):
        def __init__(self, dim: int, intermediate: int) -> None:
            super().__init__()
            self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.pwconv1 = nn.Linear(dim, intermediate)
            self.act = nn.GELU()
            self.pwconv2 = nn.Linear(intermediate, dim)
            self.gamma = nn.Parameter(torch.ones(dim))

        def forward(self, x):  # [B, C, T]
            y = self.norm(self.dwconv(x).transpose(1, 2))
            y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
            return x + y.transpose(1, 2)

    class VocosBackbone(nn.Module):
        def __init__(self, channels: int, dim: int, intermediate: int, layers: int) -> None:
            super().__init__()
            self.embed = nn.Conv1d(channels, dim, kernel_size=7, padding=3)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.convnext = nn.ModuleList([ConvNeXtBlock(dim, intermediate) for _ in range(layers)])
            self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

        def forward(self, x):  # [B, C, T] -> [B, T, dim]
            x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
            for block in self.convnext:
                x = block(x)
            return self.final_layer_norm(x.transpose(1, 2))

    return VocosBackbone


def _quantizer():
    """RepCodec's residual quantizer (factorized codes, as the upstream checkpoint stores them)."""
    import torch
    from torch import nn

    class WeightNormConv1d(nn.Module):
        """A 1x1 convolution stored as weight norm stores it (``weight_g``, ``weight_v``)."""

        def __init__(self, channels: int, out: int) -> None:
            super().__init__()
            self.weight_g = nn.Parameter(torch.ones(out, 1, 1))
            self.weight_v = nn.Parameter(torch.randn(out, channels, 1) * 0.02)
            self.bias = nn.Parameter(torch.zeros(out))

        def forward(self, x):
            return nn.functional.conv1d(x, torch._weight_norm(self.weight_v, self.weight_g, 0), self.bias)

    class FactorizedQuantizer(nn.Module):
        def __init__(self, channels: int, size: int, dim: int) -> None:
            super().__init__()
            self.in_project = WeightNormConv1d(channels, dim)
            self.out_project = WeightNormConv1d(dim, channels)
            self.codebook = nn.Embedding(size, dim)

        def forward(self, z):  # [B, C, T] -> codes [B, T], quantized [B, C, T]
            latents = self.in_project(z)
            flat = nn.functional.normalize(latents.transpose(1, 2).reshape(-1, latents.shape[1]))
            book = nn.functional.normalize(self.codebook.weight)
            distance = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.t() + book.pow(2).sum(1, keepdim=True).t()
            codes = (-distance).max(1)[1].reshape(z.shape[0], -1)
            return codes, self.out_project(self.codebook(codes).transpose(1, 2))

    class ResidualQuantizer(nn.Module):
        def __init__(self, channels: int, size: int, dim: int, count: int) -> None:
            super().__init__()
            self.quantizers = nn.ModuleList([FactorizedQuantizer(channels, size, dim) for _ in range(count)])

        def forward(self, z):  # [B, C, T] -> [count, B, T]
            residual, codes = z, []
            for quantizer in self.quantizers:
                level, quantized = quantizer(residual)
                codes.append(level)
                residual = residual - quantized
            return torch.stack(codes)

    return ResidualQuantizer


def _modules():
    """RepCodec's encoder and quantizer as torch modules (built on first use: torch is imported lazily)."""
    from torch import nn

    VocosBackbone, ResidualQuantizer = _backbone(), _quantizer()

    class RepCodecEncoder(nn.Module):
        """RepCodec up to its codes; tensor names are the upstream checkpoint's."""

        def __init__(self, hidden_size: int = 1024, vocos_dim: int = 384, vocos_intermediate_dim: int = 2048,
                     vocos_num_layers: int = 12, codebook_size: int = 8192, codebook_dim: int = 8,
                     num_quantizers: int = 1) -> None:
            super().__init__()
            self.encoder = nn.Sequential(
                VocosBackbone(hidden_size, vocos_dim, vocos_intermediate_dim, vocos_num_layers),
                nn.Linear(vocos_dim, hidden_size))
            self.quantizer = ResidualQuantizer(hidden_size, codebook_size, codebook_dim, num_quantizers)

        def forward(self, features):  # [B, T, hidden] -> [num_quantizers, B, T]
            return self.quantizer(self.encoder(features.transpose(1, 2)).transpose(1, 2))

    return RepCodecEncoder


def _sizes(state: dict) -> dict:
    """RepCodec's constructor arguments, read off its checkpoint's tensor shapes."""
    try:
        embed = state["encoder.0.embed.weight"]
        book = state["quantizer.quantizers.0.codebook.weight"]
    except KeyError as missing:
        raise WeightsNotFound(f"{CODEC_WEIGHTS} is not a RepCodec checkpoint (no tensor {missing})") from None
    prefix = "encoder.0.convnext."
    return dict(
        hidden_size=int(embed.shape[1]), vocos_dim=int(embed.shape[0]),
        vocos_intermediate_dim=int(state[prefix + "0.pwconv1.weight"].shape[0]),
        vocos_num_layers=len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)}),
        codebook_size=int(book.shape[0]), codebook_dim=int(book.shape[1]),
        num_quantizers=len({k.split(".")[2] for k in state if k.startswith("quantizer.quantizers.")}),
    )


def _upstream_names(state: dict) -> dict:
    """Weight norm saved by torch's newer parametrisation is the same two tensors under other names."""
    renamed = {}
    for key, value in state.items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        renamed[key.replace(".parametrizations.weight.original1", ".weight_v")] = value
    return renamed


def load_semantic_codec(path: str):
    from safetensors.torch import load_file

    state = _upstream_names(load_file(path, device="cpu"))
    model = _modules()(**_sizes(state))
    wanted = {k: v for k, v in state.items() if not k.startswith(("decoder.", "down.", "up."))}
    missing, unexpected = model.load_state_dict(wanted, strict=False)
    if missing or unexpected:
        raise WeightsNotFound(f"{path} does not fit RepCodec: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()


def load_stats(folder: str):
    """Layer-17 ``(mean, std)``; never unpickles anything but tensors."""
    import torch

    path = find_file(folder, STATS_FILES)
    if path is None:
        raise WeightsNotFound(f"{folder} has none of {', '.join(STATS_FILES)} (the w2v-BERT layer-17 statistics)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        stats = load_file(path)
    else:
        stats = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(stats, dict) or "mean" not in stats or "var" not in stats:
        raise WeightsNotFound(f"{path} should hold the tensors 'mean' and 'var'")
    return stats["mean"].float(), torch.sqrt(stats["var"].float())


class MaskGCTSemantic:
    batching = "exact-length"
    frame_rates = [50.0]
    num_codebooks = 1
    sample_rate = 16000
    hop = 320  # 10 ms filter-bank frames, two to a feature frame
    alignment = 320

    def __init__(self, model, extractor, codec, mean, std, name: str, device: str) -> None:
        import torch

        self.name = name
        self.device = torch.device(device)
        if model.config.num_hidden_layers < LAYER:
            raise UsageError(f"{name}: the w2v-BERT model has {model.config.num_hidden_layers} layers; "
                             f"MaskGCT's codes come from layer {LAYER}")
        hidden = model.config.hidden_size
        if codec.encoder[0].embed.in_channels != hidden or mean.shape[-1] != hidden:
            raise UsageError(f"{name}: the semantic codec and statistics do not fit w2v-BERT's hidden size {hidden}")
        self.model = model.to(device).eval()
        # (the extractor pads a batch's filter banks with its padding value, the mask with zeros)
        self.featurizer = ExtractorFeatures.of(extractor, (("input_features", 1, float(extractor.padding_value)),
                                                         ("attention_mask", 1, 0)))
        self.codec = codec.to(device).eval()
        self.mean, self.std = mean.to(device), std.to(device)
        self.cardinality = int(codec.quantizer.quantizers[0].codebook.weight.shape[0])
        self.num_codebooks = len(codec.quantizer.quantizers)

    def frame_hops(self) -> list[int]:
        return [self.hop]

    def batch_key(self, num_samples: int) -> int:
        return num_samples

    def num_frames(self, num_samples: int) -> list[int]:
        fbank_frames = 1 + (num_samples - 400) // 160 if num_samples >= 400 else 0
        return [(fbank_frames + 1) // 2]

    def encode(self, wav, lengths):
        return self.encode_features(model_inputs(self.featurizer, wav, lengths), lengths)

    def encode_features(self, inputs, lengths):
        """Codes of a batch of features (from :attr:`featurizer`, padded by :func:`audiomill.features.collate`)."""
        return self.codes_of(self.semantic_features(inputs))

    def semantic_features(self, inputs):
        """w2v-BERT's layer 17, normalised by the statistics: ``[B, T, hidden]`` (what the codes, and
        IndexTTS2's conditioning, are computed from)."""
        hidden = self.model(input_features=inputs["input_features"].to(self.device),
                            attention_mask=inputs["attention_mask"].to(self.device),
                            output_hidden_states=True).hidden_states[LAYER]
        return (hidden - self.mean) / self.std

    def codes_of(self, features):
        return [self.codec(features).permute(1, 0, 2)]  # [quantizers, B, T] -> [B, quantizers, T]

    def decode(self, codes):
        raise UsageError(f"{self.name} codes are semantic units: there is no decoder back to audio")


def random_parts(semantic: dict | None = None, codec: dict | None = None, seed: int = 0):
    """A random w2v-BERT, RepCodec and statistics whose codes follow their input.

    Random codebooks are far from every (normalised) latent, which gives most frames one
    code; the codebook is filled with spread-out latents of a test signal instead, and
    the statistics are that signal's, as MaskGCT's are its training data's.
    """
    import torch
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    from audiomill.codecs.hf import _test_signal, spread_rows

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        model = Wav2Vec2BertModel(Wav2Vec2BertConfig(**(semantic or {}))).eval()
        extractor = SeamlessM4TFeatureExtractor()
        inputs = extractor(_test_signal(16000).numpy(), sampling_rate=16000, return_tensors="pt")
        hidden = model(**inputs, output_hidden_states=True).hidden_states[LAYER]
        mean, var = hidden[0].mean(0), hidden[0].var(0)
        repcodec = _modules()(hidden_size=model.config.hidden_size, **(codec or {})).eval()
        normalised = (hidden - mean) / var.sqrt()
        latents = repcodec.quantizer.quantizers[0].in_project(
            repcodec.encoder(normalised.transpose(1, 2)).transpose(1, 2))
        book = repcodec.quantizer.quantizers[0].codebook.weight
        book.copy_(spread_rows(torch.nn.functional.normalize(latents[0].T), book.shape[0]))
    return model, extractor, repcodec, mean, var


def save_random(folder: str, semantic: dict | None = None, codec: dict | None = None, seed: int = 0) -> str:
    """:func:`random_parts` (the tiny configuration unless told) in the upstream folder layout."""
    import torch
    from safetensors.torch import save_file

    model, extractor, repcodec, mean, var = random_parts(semantic or TINY_SEMANTIC, codec or TINY_CODEC, seed)
    model.save_pretrained(os.path.join(folder, SEMANTIC_MODEL))
    extractor.save_pretrained(os.path.join(folder, SEMANTIC_MODEL))
    os.makedirs(os.path.join(folder, "semantic_codec"), exist_ok=True)
    save_file({k: v.contiguous() for k, v in repcodec.state_dict().items()}, os.path.join(folder, CODEC_WEIGHTS))
    torch.save({"mean": mean, "var": var}, os.path.join(folder, STATS_FILES[0]))
    return folder


def load(info: CodecInfo, weights_dir: str | None, device: str, options: dict | None = None) -> MaskGCTSemantic:
    if options:
        raise UsageError(f"{info.name}: unknown codec option(s) {', '.join(options)}; it has none")
    if weights_dir is None:  # the real architecture, random (for speed runs)
        model, extractor, codec, mean, var = random_parts()
        return MaskGCTSemantic(model, extractor, codec, mean, var.sqrt(), info.name, device)
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertModel

    semantic = os.path.join(weights_dir, SEMANTIC_MODEL)
    model = Wav2Vec2BertModel.from_pretrained(semantic, use_safetensors=os.path.isfile(
        os.path.join(semantic, "model.safetensors")))
    if os.path.isfile(os.path.join(semantic, "preprocessor_config.json")):
        extractor = SeamlessM4TFeatureExtractor.from_pretrained(semantic)
    else:
        extractor = SeamlessM4TFeatureExtractor()
    mean, std = load_stats(weights_dir)
    codec = load_semantic_codec(os.path.join(weights_dir, CODEC_WEIGHTS))
    return MaskGCTSemantic(model, extractor, codec, mean, std, info.name, device)


def save_tiny(info: CodecInfo, folder: str) -> str:
    """The tiny w2v-BERT and RepCodec, in the upstream folder layout."""
    return save_random(folder)
