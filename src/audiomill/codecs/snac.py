"""SNAC (Siuzdak et al.): multi-scale codes, coarse to fine levels.

SNAC right-pads every clip with zeros to a multiple of ``hop * lcm(vq_strides[0],
attn_window_size)`` and has no padding mask, so zero-padding a clip further in a batch
would change its last frames. Without attention (24 kHz) the encoder is convolutions
only, and the padding is masked at every convolution (:mod:`audiomill.codecs.masking`,
the clip's valid length being what SNAC pads it to): with ``--batching padded`` clips of any
length batch, exactly. Otherwise, and always with local attention (32 and 44 kHz, whose
attention has no mask), clips batch with those SNAC pads to the same length.
"""

from __future__ import annotations

import json
import math
import os

from audiomill.codecs import WEIGHT_FILES, CodecInfo, load_state_dict
from audiomill.codecs.masking import ConvMask
from audiomill.errors import UsageError


CONFIG_24KHZ = dict(
    sampling_rate=24000, encoder_dim=48, encoder_rates=[2, 4, 8, 8], decoder_dim=1024,
    decoder_rates=[8, 8, 4, 2], attn_window_size=None, codebook_size=4096, codebook_dim=8, vq_strides=[4, 2, 1],
)
CONFIG_32KHZ = dict(
    sampling_rate=32000, encoder_dim=64, encoder_rates=[2, 3, 8, 8], decoder_dim=1536,
    decoder_rates=[8, 8, 3, 2], attn_window_size=32, codebook_size=4096, codebook_dim=8, vq_strides=[8, 4, 2, 1],
)
CONFIG_44KHZ = dict(CONFIG_32KHZ, sampling_rate=44100)
TINY = dict(encoder_dim=8, decoder_dim=32, codebook_size=64, codebook_dim=4)  # 0.2 M params, for tests


def _info(name: str, hub_id: str, config: dict) -> CodecInfo:
    hop = math.prod(config["encoder_rates"])
    rates = tuple(config["sampling_rate"] / (hop * s) for s in config["vq_strides"])
    return CodecInfo(
        name=name, module=__name__, sample_rate=config["sampling_rate"], frame_rates=rates,
        num_codebooks=len(config["vq_strides"]), cardinality=config["codebook_size"],
        batching="masked",
        extra="snac", hub_id=hub_id, weight_files=WEIGHT_FILES, config=config,
        description="SNAC multi-scale codec; one token list per level, coarse to fine",
    )


INFOS = [
    _info("snac-24khz", "hubertsiuzdak/snac_24khz", CONFIG_24KHZ),
    _info("snac-32khz", "hubertsiuzdak/snac_32khz", CONFIG_32KHZ),
    _info("snac-44khz", "hubertsiuzdak/snac_44khz", CONFIG_44KHZ),
]


class SnacCodec:
    def __init__(self, model, name: str, device: str) -> None:
        import torch

        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.name = name
        self.sample_rate = int(model.sampling_rate)
        self.hop = int(model.hop_length)
        self.strides = [int(s) for s in model.vq_strides]
        self.alignment = self.hop * math.lcm(self.strides[0], model.attn_window_size or 1)
        self.frame_rates = [self.sample_rate / h for h in self.frame_hops()]
        self.num_codebooks = len(self.strides)
        self.cardinality = int(model.codebook_size)
        # any lengths batch, masked (codecs.masking): the encoder is convolutions, and for 32/44 kHz a
        # local attention within windows that a clip's padded length (a multiple of them) never straddles
        self.batching = "masked"
        self.mask = ConvMask(model.encoder)

    def frame_hops(self) -> list[int]:
        return [self.hop * s for s in self.strides]

    def padded(self, num_samples: int) -> int:
        """The length SNAC pads a clip to before encoding (a multiple of :attr:`alignment`)."""
        return -(-num_samples // self.alignment) * self.alignment

    def batch_key(self, num_samples: int) -> int:
        return self.padded(num_samples) // self.alignment

    def num_frames(self, num_samples: int) -> list[int]:
        return [self.padded(num_samples) // h for h in self.frame_hops()]

    def encode(self, wav, lengths):
        """Codes per level for ``wav[B, T]``; the caller chooses the grad mode (the stage: inference)."""
        with self.mask.clips([self.padded(int(n)) for n in lengths]):
            return self.model.encode(wav.to(self.device)[:, None, :])

    def decode(self, codes):
        import torch

        with torch.inference_mode():
            return self.model.decode([c.to(self.device) for c in codes])[:, 0, :]


def random_model(config: dict, seed: int = 0):
    """A randomly initialised SNAC whose codes follow its input, as trained weights' do.

    Random biases swamp the signal (every frame gets nearly the same code, so no
    comparison could fail), so the encoder's are zeroed -- all but a small first-layer
    bias, which keeps SNAC sensitive to zero-padding as trained weights are (with no
    bias at all, padded zeros stay zeros through every layer and padding is harmless).
    """
    import torch
    from snac import SNAC

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SNAC(**config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") and (name.startswith("encoder") or ".in_proj." in name):
                parameter.mul_(0.03) if name == "encoder.block.0.bias" else parameter.zero_()
    return model


def save_random(folder: str, config: dict, seed: int = 0) -> str:
    """:func:`random_model` saved in the upstream layout (config.json + pytorch_model.bin)."""
    import torch

    model = random_model(config, seed)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    torch.save(model.state_dict(), os.path.join(folder, "pytorch_model.bin"))
    return folder


def load(info: CodecInfo, weights_dir: str | None, device: str, options: dict | None = None) -> SnacCodec:
    from snac import SNAC

    if options:
        raise UsageError(f"{info.name} has no codec options (got {', '.join(options)})")
    if weights_dir is None:
        return SnacCodec(random_model(info.config), info.name, device)
    with open(os.path.join(weights_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    rate = config.get("sampling_rate")
    if rate != info.sample_rate:
        raise UsageError(
            f"the model in {weights_dir} is a {rate} Hz SNAC, but --codec {info.name} expects {info.sample_rate} Hz"
        )
    model = SNAC(**config)
    model.load_state_dict(load_state_dict(weights_dir, info.weight_files))
    return SnacCodec(model, info.name, device)


def save_tiny(info: CodecInfo, folder: str) -> str:
    """The tiny test configuration of ``info``'s architecture (its rates, its attention), saved as upstream."""
    return save_random(folder, dict(info.config, **TINY))
