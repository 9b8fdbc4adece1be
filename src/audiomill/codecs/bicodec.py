"""Spark-TTS BiCodec: 50 Hz semantic tokens plus 32 global (speaker) tokens per clip.

The model is Spark-TTS' own code, from ``spark-tts-lib`` on PyPI (its metadata asks for
torchaudio, which does not load with a CPU-only torch: install it with ``--no-deps``;
its mel transform then comes from audiomill's torchaudio stand-in). Loading and every
step of tokenizing are the library's ``BiCodecTokenizer``'s, on audio audiomill has
already decoded and resampled: volume normalisation as the checkpoint's ``config.yaml``
asks, the reference clip (the first ``ref_segment_duration`` seconds, tiled when
shorter), wav2vec2 XLSR-53 features (mean of hidden states 11, 14 and 16), then
``BiCodec.tokenize``.

``--model-path`` is the Spark-TTS-0.5B folder (or any with the same layout):
``config.yaml``, ``BiCodec/config.yaml`` + ``BiCodec/model.safetensors`` and
``wav2vec2-large-xlsr-53/``; the LLM is not needed.

Records keep what the codec means: ``tokens`` holds the semantic stream (one row, as
``<|bicodec_semantic_N|>``) and ``global_tokens`` the 32 speaker tokens of the clip (as
``<|bicodec_global_N|>``). A file longer than ``--chunk-seconds`` is tokenized in
windows: its global tokens are the first window's (whose first seconds are the file's)
and its semantic tokens are stitched. As Spark-TTS normalises the volume over the whole
clip and wav2vec2 normalises and attends over it, those agree closely with whole-file
tokens, not exactly (about 95 % on 20 s of speech in 8 s windows); files up to one
window long get exactly the library's tokens.
"""

from __future__ import annotations

import os

from audiomill.codecs import CodecInfo
from audiomill.errors import UsageError, WeightsNotFound

SSL_MODEL = "wav2vec2-large-xlsr-53"
CODEC_DIR = "BiCodec"
SSL_LAYERS = (11, 14, 16)
INSTALL_HINT = ("bicodec needs Spark-TTS' model code: pip install --no-deps spark-tts-lib "
                "&& pip install 'audiomill[bicodec]'")

INFOS = [
    CodecInfo(
        name="bicodec", module=__name__, sample_rate=16000, frame_rates=(50.0,), num_codebooks=1, cardinality=8192,
        batching="exact-length", extra="bicodec", hub_id="SparkAudio/Spark-TTS-0.5B",
        weight_files=(os.path.join(CODEC_DIR, "model.safetensors"),),
        layout=(("config.yaml",), (os.path.join(CODEC_DIR, "config.yaml"),),
                (os.path.join(CODEC_DIR, "model.safetensors"),), (os.path.join(SSL_MODEL, "config.json"),)),
        description="Spark-TTS BiCodec, 16 kHz: 50 Hz semantic tokens (8192) in 'tokens', 32 global speaker "
                    "tokens (4096) per clip in 'global_tokens'; needs spark-tts-lib (--no-deps)",
    ),
]

# a tiny BiCodec of the real architecture, for tests (the released one, scaled down)
TINY_SSL = dict(hidden_size=16, num_hidden_layers=16, num_attention_heads=2, intermediate_size=32,
                conv_dim=[8] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                feat_extract_norm="layer", do_stable_layer_norm=True)


def tiny_config(hidden: int = 16) -> dict:
    """``BiCodec/config.yaml``'s ``audio_tokenizer`` section, scaled down (Spark-TTS-0.5B's structure)."""
    speaker = 32
    return dict(
        mel_params=dict(sample_rate=16000, n_fft=1024, win_length=640, hop_length=320, mel_fmin=10, mel_fmax=None,
                        num_mels=128),
        encoder=dict(input_channels=hidden, vocos_dim=16, vocos_intermediate_dim=32, vocos_num_layers=1,
                     out_channels=hidden),
        decoder=dict(input_channel=speaker, channels=32, rates=[8, 5, 4, 2], kernel_sizes=[16, 11, 8, 4]),
        quantizer=dict(input_dim=hidden, codebook_size=64, codebook_dim=8, commitment=0.25, codebook_loss_weight=2.0,
                       use_l2_normlize=True, threshold_ema_dead_code=0.2),
        speaker_encoder=dict(input_dim=128, out_dim=speaker, latent_dim=8, token_num=32, fsq_levels=[4] * 6,
                             fsq_num_quantizers=1),
        prenet=dict(input_channels=hidden, vocos_dim=16, vocos_intermediate_dim=32, vocos_num_layers=1,
                    out_channels=speaker, condition_dim=speaker, use_tanh_at_final=False),
        postnet=dict(input_channels=speaker, vocos_dim=16, vocos_intermediate_dim=32, vocos_num_layers=1,
                     out_channels=hidden, use_tanh_at_final=False),
    )


# Spark-TTS-0.5B's top-level config.yaml (what BiCodecTokenizer reads from it)
TOKENIZER_CONFIG = dict(sample_rate=16000, ref_segment_duration=6, latent_hop_length=320, volume_normalize=True,
                        highpass_cutoff_freq=40)


def _library():
    """spark-tts-lib's tokenizer module, with torchaudio (real or stand-in) importable first."""
    from audiomill.codecs import torchaudio_compat

    torchaudio_compat.install()
    try:
        from spark_tts_lib.models import audio_tokenizer
        from spark_tts_lib.utils import audio
    except ImportError as exc:
        raise UsageError(f"{INSTALL_HINT} ({exc})") from None
    return audio_tokenizer, audio


class BiCodec:
    batching = "exact-length"
    frame_rates = [50.0]
    num_codebooks = 1
    clip_fields = ("global_tokens",)  # per-clip outputs, after the frame levels

    def __init__(self, tokenizer, name: str, device: str) -> None:
        import torch

        _, audio = _library()
        self.name = name
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.normalize_volume = audio.audio_volume_normalize
        config = tokenizer.config
        self.sample_rate = int(config["sample_rate"])
        self.hop = int(config["latent_hop_length"])
        self.alignment = self.hop
        self.volume_normalize = bool(config["volume_normalize"])
        ssl = tokenizer.feature_extractor.config
        if ssl.num_hidden_layers < max(SSL_LAYERS):
            raise UsageError(f"{name}: the wav2vec2 model has {ssl.num_hidden_layers} layers; BiCodec uses "
                             f"hidden states {', '.join(map(str, SSL_LAYERS))}")
        self.kernels, self.strides = list(ssl.conv_kernel), list(ssl.conv_stride)
        self.cardinality = int(tokenizer.model.quantizer.codebook_size)

    def frame_hops(self) -> list[int]:
        return [self.hop]

    def batch_key(self, num_samples: int) -> int:
        return num_samples  # per-clip normalisation and attention over the clip: exact lengths only

    def num_frames(self, num_samples: int) -> list[int]:
        from audiomill.codecs import conv_frames

        return [conv_frames(num_samples, self.kernels, self.strides)]

    def encode(self, wav, lengths):
        """``wav [B, T]`` -> ``[semantic [B, frames], global [B, 32]]``, as BiCodecTokenizer.tokenize makes them."""
        import numpy as np
        import torch

        clips = [clip.numpy().astype(np.float64) for clip in wav.cpu()]
        if self.volume_normalize:
            clips = [self.normalize_volume(clip) for clip in clips]
        refs = torch.stack([torch.from_numpy(self.tokenizer.get_ref_clip(clip)).float() for clip in clips])
        features = self.tokenizer.extract_wav2vec2_features(clips)
        batch = {"wav": torch.from_numpy(np.stack(clips)).float().to(self.device), "ref_wav": refs.to(self.device),
                 "feat": features.to(self.device)}
        semantic, speaker = self.tokenizer.model.tokenize(batch)
        return [semantic, speaker.reshape(speaker.shape[0], -1)]

    def decode(self, codes):
        import torch

        semantic, speaker = codes[0].to(self.device), codes[1].to(self.device)
        with torch.inference_mode():
            audio = self.tokenizer.model.detokenize(semantic, speaker[:, None, :])
        return audio.reshape(audio.shape[0], -1)


def save_random(folder: str, seed: int = 0) -> str:
    """A tiny random BiCodec in Spark-TTS-0.5B's folder layout, its codebook spread over a test signal's latents."""
    import torch
    import yaml
    from safetensors.torch import save_file
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from audiomill.codecs.hf import _test_signal, spread_rows, standardise

    _library()
    from spark_tts_lib.models.bicodec import BiCodec as Model
    from spark_tts_lib.modules.encoder_decoder.feat_decoder import Decoder
    from spark_tts_lib.modules.encoder_decoder.feat_encoder import Encoder
    from spark_tts_lib.modules.encoder_decoder.wave_generator import WaveGenerator
    from spark_tts_lib.modules.speaker.speaker_encoder import SpeakerEncoder
    from spark_tts_lib.modules.vq.factorized_vector_quantize import FactorizedVectorQuantize

    config = tiny_config(TINY_SSL["hidden_size"])
    os.makedirs(os.path.join(folder, CODEC_DIR), exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w") as out:
        yaml.safe_dump(TOKENIZER_CONFIG, out)
    with open(os.path.join(folder, CODEC_DIR, "config.yaml"), "w") as out:
        yaml.safe_dump({"audio_tokenizer": config}, out)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        ssl = Wav2Vec2Model(Wav2Vec2Config(**TINY_SSL)).eval()
        ssl.save_pretrained(os.path.join(folder, SSL_MODEL))
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                 return_attention_mask=True).save_pretrained(os.path.join(folder, SSL_MODEL))
        model = Model(mel_params=config["mel_params"], encoder=Encoder(**config["encoder"]),
                      decoder=WaveGenerator(**config["decoder"]),
                      quantizer=FactorizedVectorQuantize(**config["quantizer"]),
                      speaker_encoder=SpeakerEncoder(**config["speaker_encoder"]),
                      prenet=Decoder(**config["prenet"]), postnet=Decoder(**config["postnet"])).eval()
        processor = Wav2Vec2FeatureExtractor.from_pretrained(os.path.join(folder, SSL_MODEL))
        signal = _test_signal(16000).numpy()
        hidden = ssl(processor(signal, sampling_rate=16000, return_tensors="pt").input_values,
                     output_hidden_states=True).hidden_states
        features = sum(hidden[i] for i in SSL_LAYERS) / len(SSL_LAYERS)
        latents = model.quantizer.in_project(model.encoder(features.transpose(1, 2)))[0].T
        book = model.quantizer.codebook.weight
        book.copy_(spread_rows(torch.nn.functional.normalize(latents), book.shape[0]))
        # the speaker FSQ: random init puts every token near one level; standardise its projection
        project = model.speaker_encoder.quantizer.project_in
        captured = []
        hook = project.register_forward_hook(lambda module, args, output: captured.append(args[0]))
        reference = torch.from_numpy(signal[:96000]).float()[None]
        try:
            model.tokenize({"feat": features, "ref_wav": reference, "wav": reference})
        finally:
            hook.remove()
        standardise(project, captured[0])
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(folder, CODEC_DIR, "model.safetensors"))
    return folder


def load(info: CodecInfo, weights_dir: str | None, device: str, options: dict | None = None) -> BiCodec:
    import contextlib
    import io

    if options:
        raise UsageError(f"{info.name}: unknown codec option(s) {', '.join(options)}; it has none")
    if weights_dir is None:
        raise UsageError(f"{info.name} needs --model-path (the Spark-TTS-0.5B folder) or the hub cache: its "
                         "architecture is defined by the checkpoint's config.yaml")
    audio_tokenizer, _ = _library()
    if not os.path.isfile(os.path.join(weights_dir, CODEC_DIR, "model.safetensors")):
        raise WeightsNotFound(f"{weights_dir} has no {CODEC_DIR}/model.safetensors")
    report = io.StringIO()
    with contextlib.redirect_stdout(report):  # the library prints every missing or unexpected tensor
        tokenizer = audio_tokenizer.BiCodecTokenizer(weights_dir, device=device)
    problems = [line for line in report.getvalue().splitlines() if line.startswith(("Missing", "Unexpected"))]
    # the mel transform's window and filter bank are computed, not learned: a checkpoint may omit them
    missing = [line for line in problems if line.startswith("Missing") and "mel_transformer." not in line]
    if missing:
        raise WeightsNotFound(f"{weights_dir}/{CODEC_DIR}/model.safetensors does not fit its config.yaml: "
                              f"{len(missing)} tensors missing ({missing[0]})")
    tokenizer.model.eval()
    tokenizer.feature_extractor.eval()
    return BiCodec(tokenizer, info.name, device)


def save_tiny(info: CodecInfo, folder: str) -> str:
    """A tiny random BiCodec in Spark-TTS-0.5B's folder layout."""
    return save_random(folder)
