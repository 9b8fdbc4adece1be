"""Codecs as Hugging Face transformers implements them: EnCodec, DAC, Mimi, Higgs Audio v2, X-codec2.

Each loads the hub repository's own layout (``config.json`` + ``model.safetensors``,
or ``pytorch_model.bin`` read with ``weights_only=True``) through the model class's
``from_pretrained``, and returns codes ``[num_codebooks, frames]`` exactly as the
model's ``encode`` gives them for that clip alone.

Batching (see :mod:`audiomill.codecs.masking`): DAC's encoder is convolutions only, and
its padding is masked at every convolution; Mimi's and EnCodec 24 kHz's are causal, and
each convolution is given past a clip's end the padding it would add to the clip alone
(zeros, repeats, a reflection). So their clips of any length batch, every code identical to
each clip alone. The others cannot be made blind to padding this way (EnCodec 48 kHz
normalises each chunk and is not causal; Higgs' HuBERT and X-codec2's w2v-BERT attend to the
padding): they batch only with clips of exactly the same length, which keeps every code
identical to the reference, unless ``--batching padded`` asks for any lengths.

X-codec2's filter banks (normalised over each clip) are computed in the decode processes
(:attr:`TransformersCodec.featurizer`, see :mod:`audiomill.features`), each clip's from its
own samples, padded as its feature extractor pads a batch.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

from audiomill.codecs import WEIGHT_FILES, CodecInfo
from audiomill.codecs.masking import ConvMask, PaddingMask
from audiomill.errors import UsageError
from audiomill.features import ExtractorFeatures, model_inputs

@dataclass(frozen=True)
class Family:
    """What differs between the transformers codecs, apart from their configs."""

    model_class: str  # transformers class name
    config_class: str
    option: str | None  # the one encode option users choose: "bandwidth" (EnCodec), "num_quantizers" (Mimi)
    tiny: dict  # a tiny configuration of the real architecture, for tests


ENCODEC = Family("EncodecModel", "EncodecConfig", "bandwidth", dict(
    num_filters=4, hidden_size=16, codebook_dim=16, codebook_size=64, num_lstm_layers=1))
DAC = Family("DacModel", "DacConfig", None, dict(
    encoder_hidden_size=8, decoder_hidden_size=32, hidden_size=32, n_codebooks=4, codebook_size=64, codebook_dim=4))
MIMI = Family("MimiModel", "MimiConfig", "num_quantizers", dict(
    hidden_size=32, num_filters=4, codebook_size=64, codebook_dim=16, num_quantizers=8,
    vector_quantization_hidden_dimension=16, upsample_groups=32, num_hidden_layers=1, intermediate_size=64,
    num_attention_heads=2, num_key_value_heads=2, head_dim=16))
HIGGS = Family("HiggsAudioV2TokenizerModel", "HiggsAudioV2TokenizerConfig", "bandwidth", dict(
    codebook_dim=8,
    acoustic_model_config=dict(encoder_hidden_size=4, decoder_hidden_size=64, hidden_size=16,
                               downsampling_ratios=[8, 5, 4, 2, 3], upsampling_ratios=[8, 5, 4, 2, 3]),
    semantic_model_config=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                               conv_dim=[8] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)))
XCODEC2 = Family("Xcodec2Model", "Xcodec2Config", None, dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
    head_dim=16, encoder_hidden_size=2, quantization_dim=64,
    semantic_model_config=dict(model_type="wav2vec2-bert", hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=64, output_hidden_size=32,
                               conv_depthwise_kernel_size=5)))
FAMILIES = {"encodec": ENCODEC, "dac": DAC, "mimi": MIMI, "higgs": HIGGS, "xcodec2": XCODEC2}
NEEDS_TORCHAUDIO = (HIGGS, XCODEC2)  # their transformers modules import it (resample; Kaldi filter banks)


def _info(name: str, family: str, hub_id: str, rate: int, frame_rate: float, books: int, cardinality: int,
          config: dict, description: str, default_option: float | None = None) -> CodecInfo:
    return CodecInfo(
        name=name, module=__name__, sample_rate=rate, frame_rates=(frame_rate,), num_codebooks=books,
        cardinality=cardinality, extra="transformers",
        batching="masked" if family in ("dac", "mimi") or (family == "encodec" and "chunk_length_s" not in config)
        else "exact-length",
        hub_id=hub_id,
        weight_files=WEIGHT_FILES, config=dict(config, family=family, default_option=default_option),
        description=description, options=(FAMILIES[family].option,) if FAMILIES[family].option else (),
    )


INFOS = [
    _info("encodec-24khz", "encodec", "facebook/encodec_24khz", 24000, 75.0, 8, 1024,
          dict(sampling_rate=24000), "EnCodec 24 kHz; --codec-option bandwidth=1.5|3|6|12|24 kbps (6: 8 codebooks)",
          default_option=6.0),
    _info("encodec-48khz", "encodec", "facebook/encodec_48khz", 48000, 150.0, 4, 1024,
          dict(sampling_rate=48000, audio_channels=2, normalize=True, chunk_length_s=1.0, overlap=0.01,
               target_bandwidths=[3.0, 6.0, 12.0, 24.0]),
          "EnCodec 48 kHz stereo (mono input is duplicated); --codec-option bandwidth=3|6|12|24 kbps",
          default_option=6.0),
    _info("dac-16khz", "dac", "descript/dac_16khz", 16000, 50.0, 12, 1024,
          dict(sampling_rate=16000, downsampling_ratios=[2, 4, 5, 8], upsampling_ratios=[8, 5, 4, 2], n_codebooks=12),
          "Descript Audio Codec 16 kHz"),
    _info("dac-24khz", "dac", "descript/dac_24khz", 24000, 75.0, 32, 1024,
          dict(sampling_rate=24000, downsampling_ratios=[2, 4, 5, 8], upsampling_ratios=[8, 5, 4, 2], n_codebooks=32),
          "Descript Audio Codec 24 kHz"),
    _info("dac-44khz", "dac", "descript/dac_44khz", 44100, 44100 / 512, 9, 1024,
          dict(sampling_rate=44100, downsampling_ratios=[2, 4, 8, 8], upsampling_ratios=[8, 8, 4, 2], n_codebooks=9),
          "Descript Audio Codec 44.1 kHz"),
    _info("mimi", "mimi", "kyutai/mimi", 24000, 12.5, 8, 2048, dict(sampling_rate=24000),
          "Kyutai Mimi, 12.5 Hz; --codec-option num_quantizers=N (8 as Moshi; up to 32)", default_option=8),
    _info("higgs-audio-v2", "higgs", "bosonai/higgs-audio-v2-tokenizer", 24000, 25.0, 8, 1024,
          dict(sample_rate=24000, target_bandwidths=[0.5, 1, 1.5, 2],
               acoustic_model_config=dict(downsampling_ratios=[8, 5, 4, 2, 3], upsampling_ratios=[8, 5, 4, 2, 3])),
          "Boson AI Higgs Audio v2 tokenizer, 25 Hz, acoustic + HuBERT semantic; --codec-option bandwidth=0.5|1|1.5|2 "
          "kbps (2: 8 codebooks)", default_option=2.0),
    _info("xcodec2", "xcodec2", "HKUSTAudio/xcodec2-hf", 16000, 50.0, 1, 65536,
          dict(sampling_rate=16000, downsampling_ratios=[2, 2, 4, 4, 5], quantization_levels=[4] * 8),
          "X-codec2, 16 kHz, one FSQ codebook of 65536 at 50 Hz (acoustic + w2v-BERT semantic)"),
]


def model_config(info: CodecInfo) -> dict:
    """The transformers configuration of ``info``'s layout (what differs from the class defaults)."""
    return {k: v for k, v in info.config.items() if k not in ("family", "default_option")}


def tiny_config(info: CodecInfo) -> dict:
    """The tiny test configuration of ``info``'s architecture, with its layout (rates, channels)."""
    family = FAMILIES[info.config["family"]]
    config = model_config(info)
    for key, value in family.tiny.items():
        config[key] = dict(config.get(key) or {}, **value) if isinstance(value, dict) else value
    if info.config["family"] == "encodec" and info.sample_rate == 48000:
        config["chunk_length_s"] = 0.1  # stay chunked, as the real 48 kHz model, on short test clips
    return config


def model_class(family: Family, name: str | None = None):
    """The transformers class of ``family`` (its config class if ``name == "config"``)."""
    import importlib

    import transformers

    if family in NEEDS_TORCHAUDIO:
        from audiomill.codecs import torchaudio_compat

        torchaudio_compat.install()
        package = "higgs_audio_v2_tokenizer" if family is HIGGS else "xcodec2"
        module = importlib.import_module(f"transformers.models.{package}")
        return getattr(module, family.config_class if name == "config" else family.model_class)
    return getattr(transformers, family.config_class if name == "config" else family.model_class)


def feature_extractor(weights_dir: str | None, config):
    """X-codec2's feature extractor: the checkpoint's ``preprocessor_config.json``, else the defaults."""
    model_class(XCODEC2)  # the stand-in torchaudio, before transformers checks for it
    from transformers.models.xcodec2 import Xcodec2FeatureExtractor

    if weights_dir and os.path.isfile(os.path.join(weights_dir, "preprocessor_config.json")):
        return Xcodec2FeatureExtractor.from_pretrained(weights_dir)
    return Xcodec2FeatureExtractor(sampling_rate=config.sampling_rate, hop_length=config.hop_length)


def random_model(info: CodecInfo, config: dict, seed: int = 0):
    """A randomly initialised model whose codes follow its input, as trained weights' do.

    Random init leaves Euclidean codebooks at zero (every code 0). Mimi's are filled with
    noise; EnCodec's and Higgs' from the latents of a test signal (see
    :func:`_codebooks_from_latents`), after zeroing their encoders' biases, which
    otherwise put every latent near one offset.
    """
    import torch

    family = FAMILIES[info.config["family"]]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(family)(model_class(family, "config")(**config)).eval()
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                leaf = name.rsplit(".", 1)[-1]
                if leaf in ("embed", "embed_avg", "embed_sum") and buffer.is_floating_point():
                    buffer.normal_()
                elif leaf == "cluster_usage":
                    buffer.fill_(1.0)
            if family in (ENCODEC, HIGGS):
                for name, parameter in model.named_parameters():
                    if name.endswith("bias") and not name.startswith(("quantizer", "decoder", "semantic_model")):
                        parameter.zero_()
                _codebooks_from_latents(model)
            if family is XCODEC2:
                _spread_scalar_quantizer(model)
    return model


def spread_rows(points, count: int):
    """``count`` rows of ``points`` far from each other (greedy farthest point), then jittered copies."""
    import torch

    chosen = [0]
    nearest = (points - points[0]).pow(2).sum(1)
    while len(chosen) < min(count, len(points)):
        index = int(nearest.argmax())
        if float(nearest[index]) == 0.0:
            break
        chosen.append(index)
        nearest = torch.minimum(nearest, (points - points[index]).pow(2).sum(1))
    rows = points[chosen]
    extra = count - len(rows)
    if extra > 0:
        spare = rows[torch.randint(0, len(rows), (extra,))]
        rows = torch.cat([rows, spare + 0.1 * points.std() * torch.randn_like(spare)])
    return rows


def _codebooks_from_latents(model) -> None:
    """Fill each residual codebook with far-apart latents of a test signal, layer after layer.

    A random encoder's latents vary little, so random codebook vectors give every frame
    the same code and no test could fail; vectors drawn from the latents themselves (as
    k-means initialisation does) make the codes follow the audio.
    """
    config = model.config
    rate = int(getattr(config, "sampling_rate", None) or config.sample_rate)
    signal = _test_signal(rate)[None, None].expand(-1, getattr(config, "audio_channels", 1), -1)
    captured = {}
    quantizer = model.quantizer
    encode = quantizer.encode

    def capture(embeddings, *args, **kwargs):
        captured["latents"] = embeddings
        return encode(embeddings, *args, **kwargs)

    quantizer.encode = capture
    try:
        model.encode(signal)
    finally:
        del quantizer.encode
    residual = captured["latents"]  # [1, dim, frames]
    layers = quantizer.layers if hasattr(quantizer, "layers") else quantizer.quantizers
    for layer in layers:
        inner = residual.permute(0, 2, 1)
        if hasattr(layer, "project_in"):
            inner = layer.project_in(inner)
        book = layer.codebook
        book.embed.copy_(spread_rows(inner[0], book.embed.shape[0]))
        book.embed_avg.copy_(book.embed)
        residual = residual - layer.decode(layer.encode(residual))


def _test_signal(rate: int, seconds: float = 4.0):
    import torch

    time = torch.arange(int(seconds * rate)) / rate
    envelope = (torch.sin(2 * torch.pi * 3 * time) > 0).float()
    return 0.3 * envelope * torch.sin(2 * torch.pi * (200 + 300 * time) * time) + 0.05 * torch.randn(len(time))


def _spread_scalar_quantizer(model) -> None:
    """Scale X-codec2's projection into its FSQ so a test signal's latents span the levels.

    Random init projects to values near zero, which all round to the middle level (one
    code for every frame); standardising the projection on a test signal's latents
    makes the codes follow the audio.
    """
    project = model.quantizer.project_in
    captured = {}

    def capture(module, args, output) -> None:
        captured["latents"] = args[0]

    hook = project.register_forward_hook(capture)
    extractor = feature_extractor(None, model.config)
    inputs = extractor([_test_signal(model.config.sampling_rate).numpy()], sampling_rate=model.config.sampling_rate,
                       return_tensors="pt")
    try:
        model.encode(**inputs)
    finally:
        hook.remove()
    standardise(project, captured["latents"])


def standardise(project, inputs) -> None:
    """Rescale the linear layer ``project`` so that its outputs on ``inputs`` have mean 0 and std 1.5 per unit.

    For test models with scalar quantizers (FSQ): random init projects to values near
    zero, which all round to the middle level; spread over +-1.5 they use the levels.
    """
    out = project(inputs).reshape(-1, project.out_features)
    scale = 1.5 / out.std(0).clamp_min(1e-8)
    project.weight.mul_(scale[:, None])
    project.bias.copy_((project.bias - out.mean(0)) * scale)


def save_random(info: CodecInfo, folder: str, config: dict | None = None, seed: int = 0) -> str:
    """:func:`random_model` saved as its hub repository is laid out (config.json + model.safetensors)."""
    model = random_model(info, config if config is not None else tiny_config(info), seed)
    model.save_pretrained(folder)
    if info.config["family"] == "xcodec2":
        feature_extractor(None, model.config).save_pretrained(folder)
    return folder


def masking(model, family: str):
    """How padding is masked for ``family`` (see :mod:`audiomill.codecs.masking`), or None: DAC's
    encoder is convolutions only; Mimi's and EnCodec 24 kHz's are causal (the 48 kHz EnCodec, not
    causal and normalised per chunk, is set apart by the caller)."""
    if family == "dac":
        return ConvMask(model.encoder)
    if family == "mimi" and model.config.use_causal_conv:
        from transformers.models.mimi.modeling_mimi import MimiConv1d

        return PaddingMask(model.encoder, (MimiConv1d,))
    if family == "encodec" and model.config.use_causal_conv:
        from transformers.models.encodec.modeling_encodec import EncodecConv1d

        return PaddingMask(model.encoder, (EncodecConv1d,))
    return None


def dac_frames(num_samples: int, strides: list[int]) -> int:
    """DAC's encoder: length-keeping convolutions around one strided convolution per block, of kernel
    ``2 * stride`` padded by ``ceil(stride / 2)``. Not ``num_samples // hop``: a clip one sample
    short of a hop multiple still gets that hop's frame."""
    length = num_samples
    for stride in strides:
        length = (length + 2 * math.ceil(stride / 2) - 2 * stride) // stride + 1
    return max(0, length)


def higgs_frames(num_samples: int, config) -> int:
    """Higgs' frames are its semantic branch's (the acoustic one is padded to match): the clip
    resampled to 16 kHz (torchaudio's length, rounded up), padded by 160 samples a side, through
    HuBERT's convolutional front end, then every ``semantic_downsample_factor``-th frame."""
    from audiomill.codecs import conv_frames

    semantic = config.semantic_model_config
    rate, target = int(config.sample_rate), int(config.semantic_sample_rate)
    length = math.ceil(num_samples * target / rate) if rate != target else num_samples
    frames = conv_frames(length + 320, list(semantic.conv_kernel), list(semantic.conv_stride))
    return -(-frames // int(config.semantic_downsample_factor))


class TransformersCodec:
    """One transformers RVQ codec behind audiomill's Codec protocol."""

    def __init__(self, model, info: CodecInfo, device: str, option: float | None, extractor=None) -> None:
        import torch

        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.name = info.name
        self.family = info.config["family"]
        config = model.config
        self.sample_rate = int(getattr(config, "sampling_rate", None) or config.sample_rate)
        self.option = option
        self.featurizer: ExtractorFeatures | None = None
        if self.family == "mimi":
            self.hop = int(config.frame_size)
            books = int(option or config.num_quantizers)
            if not 1 <= books <= config.num_quantizers:
                raise UsageError(f"{info.name}: num_quantizers={books}: this model has 1 to {config.num_quantizers}")
        elif self.family in ("encodec", "higgs"):
            self.hop = int(config.hop_length)
            bandwidths = [float(b) for b in config.target_bandwidths]
            self.option = float(option) if option is not None else bandwidths[-1]
            if self.option not in bandwidths:
                raise UsageError(f"{info.name}: bandwidth={self.option:g}: this model has "
                                 f"{', '.join(f'{b:g}' for b in bandwidths)} kbps")
            books = model.quantizer.get_num_quantizers_for_bandwidth(self.option)
        elif self.family == "xcodec2":
            self.hop = int(config.hop_length)
            books = 1
            # its filter banks are computed in the decode processes (see audiomill.features)
            self.featurizer = ExtractorFeatures.of(
                extractor, (("input_values", 2, 0.0), ("padding_mask", 1, 0), ("input_features", 1,
                            float(extractor.padding_value)), ("input_features_mask", 1, 0)),
                setup="audiomill.codecs.torchaudio_compat")
        else:
            self.hop = int(config.hop_length)
            books = int(config.n_codebooks)
        self.alignment = self.hop
        self.mask, self.shortest = masking(self.model, self.family), 0
        self.batching = "masked" if self.mask is not None else "exact-length"
        if self.family == "encodec" and self.mask is not None:
            self.shortest = 16 * self.hop  # shorter clips may be shorter than a reflection at some layer
        self.num_codebooks = books
        self.cardinality = (math.prod(config.quantization_levels) if self.family == "xcodec2"
                            else int(config.codebook_size))
        self.frame_rates = [self.sample_rate / self.hop]
        self._chunked = self.family == "encodec" and config.chunk_length is not None
        if self._chunked:
            self.mask, self.batching = None, "exact-length"  # normalised chunks, not causal
            # the 48 kHz model encodes 1 s chunks at a stride: windows must start on chunk boundaries
            self.alignment = int(config.chunk_stride)
            self._chunk = int(config.chunk_length)
            self._chunk_frames = math.ceil(self._chunk / self.hop)

    # -- geometry ---------------------------------------------------------------------------------

    def frame_hops(self) -> list[float]:
        return [self.alignment / self._chunk_frames] if self._chunked else [self.hop]

    def batch_key(self, num_samples: int) -> int:
        return num_samples  # exact lengths; any lengths, masked, with --batching padded (see the module docstring)

    def maskable(self, num_samples: int) -> bool:
        """Whether a clip of this length batches with any other exactly (masked)."""
        return self.mask is not None and num_samples >= self.shortest

    def num_frames(self, num_samples: int) -> list[int]:
        """Frames as the model's own arithmetic makes them (see :func:`dac_frames`, :func:`higgs_frames`)."""
        if self.family == "dac":
            return [dac_frames(num_samples, self.model.config.downsampling_ratios)]
        if self.family == "higgs":
            return [higgs_frames(num_samples, self.model.config)]
        if self.family == "xcodec2":
            return [num_samples // self.hop + 1]  # its feature extractor appends one sample, then pads to a hop
        if self.family == "mimi":
            import torch

            return [int(self.model.get_encoded_length(torch.tensor(num_samples)))]
        if self._chunked:
            chunks = -(-num_samples // self.alignment)
            return [chunks * self._chunk_frames]
        return [-(-num_samples // self.hop)]

    # -- codes ------------------------------------------------------------------------------------

    def encode(self, wav, lengths):
        """``wav [B, T]`` -> ``[codes [B, K, frames]]``, as the transformers model encodes each clip."""
        if self.family == "xcodec2":
            return self.encode_features(model_inputs(self.featurizer, wav, lengths), lengths)
        x = wav.to(self.device)[:, None, :]
        if self.family == "dac":
            with self._masked(lengths):
                return [self.model.encode(x).audio_codes]
        if self.family == "mimi":
            with self._masked(lengths):
                return [self.model.encode(x, num_quantizers=self.num_codebooks).audio_codes]
        if self.family == "higgs":
            return [self.model.encode(x, bandwidth=self.option).audio_codes]
        if self.model.config.audio_channels == 2:
            x = x.expand(-1, 2, -1)
        with self._masked(lengths):
            codes = self.model.encode(x, bandwidth=self.option).audio_codes  # [chunks, B, K, frames]
        return [codes.permute(1, 2, 0, 3).reshape(codes.shape[1], codes.shape[2], -1)]

    def encode_features(self, inputs, lengths):
        """X-codec2 on a batch of its features (from :attr:`featurizer`, padded by :func:`audiomill.features.collate`)."""
        return [self.model.encode(**{k: v.to(self.device) for k, v in inputs.items()}).audio_codes]

    def _masked(self, lengths):
        """The batch's clips' lengths for the mask, if this model has one."""
        return self.mask.clips(lengths.tolist()) if self.mask is not None else contextlib.nullcontext()

    def decode(self, codes):
        import torch

        levels = codes[0].to(self.device)
        with torch.inference_mode():
            if self.family == "dac":
                return self.model.decode(audio_codes=levels).audio_values
            if self.family in ("mimi", "higgs", "xcodec2"):
                return self.model.decode(levels).audio_values[:, 0, :]
            if self._chunked:
                chunks = levels.shape[-1] // self._chunk_frames
                frames = levels.reshape(levels.shape[0], levels.shape[1], chunks, self._chunk_frames)
                frames = frames.permute(2, 0, 1, 3)
                scales = [torch.ones(levels.shape[0], 1, device=self.device)] * chunks
                audio = self.model.decode(frames, scales).audio_values
                return audio.mean(dim=1)
            return self.model.decode(levels[None], [None]).audio_values[:, 0, :]


def load(info: CodecInfo, weights_dir: str | None, device: str, options: dict | None = None) -> TransformersCodec:
    family = FAMILIES[info.config["family"]]
    options = dict(options or {})
    option = options.pop(family.option, info.config.get("default_option")) if family.option else None
    if options:
        known = family.option or "none"
        raise UsageError(f"{info.name}: unknown codec option(s) {', '.join(options)}; known: {known}")
    if weights_dir is None:
        model = random_model(info, model_config(info))
    else:
        model = model_class(family).from_pretrained(weights_dir, use_safetensors=os.path.isfile(
            os.path.join(weights_dir, "model.safetensors")))
        rate = getattr(model.config, "sampling_rate", None) or model.config.sample_rate
        if int(rate) != info.sample_rate:
            raise UsageError(f"the model in {weights_dir} runs at {rate} Hz, but --codec "
                             f"{info.name} expects {info.sample_rate} Hz")
    extractor = feature_extractor(weights_dir, model.config) if family is XCODEC2 else None
    return TransformersCodec(model, info, device, float(option) if option is not None else None, extractor)


def save_tiny(info: CodecInfo, folder: str) -> str:
    """The tiny test configuration of ``info``'s architecture, saved as its hub repository is laid out."""
    return save_random(info, folder)
