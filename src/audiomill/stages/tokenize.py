"""The tokenize stage: codec-rate windows in, codec codes out, one record per file.

Everything but the codec is :class:`~audiomill.stages.batched.BatchedModelStage`'s: this
module says how a codec is called, how a batch's codes are cut back to each clip's frames,
how a long file's windows are stitched (see :mod:`audiomill.chunking`), and what a record
holds::

    {"key", "tar_file", "audio_file", "num_samples", "sample_rate", "codec",
     "tokens": [[...] per level or codebook], "token_shape", <per-clip fields>, <metadata>}
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from audiomill import layouts
from audiomill.batching import MAX_PADDING
from audiomill.chunking import Window, stitch
from audiomill.codecs import Codec
from audiomill.errors import UsageError
from audiomill.items import Item
from audiomill.stages import FileOutput, with_meta
from audiomill.stages.batched import PRECISIONS, BatchedModelStage, FileState
from audiomill.stages.budget import CPU_BATCH_SECONDS, batch_budget
from audiomill.stages.settings import from_table, setting

RESERVED = ("key", "tar_file", "audio_file", "num_samples", "sample_rate", "codec", "tokens", "token_shape", "error",
            *layouts.FIELD_NAMES)

@dataclass
class TokenizeSettings:
    """A tokenize stage's settings: the flags of ``audiomill tokenize``."""

    codec: str = setting("snac-24khz", "codec name; see 'audiomill codecs'", short="-c", shown=True)
    codec_options: dict[str, Any] = setting(
        {}, "a setting of the codec, e.g. bandwidth=6 (EnCodec) or num_quantizers=8 (Mimi); repeatable; see "
            "'audiomill codecs'", flag="--codec-option", metavar="KEY=VALUE", repeat=True,
        parse=lambda value: codec_options_of(value))
    model_path: str | None = setting(
        None, "local folder with the codec's config.json and weights; otherwise the Hugging Face cache/hub",
        metavar="DIR")
    random_weights: bool = setting(
        False, "use randomly initialised weights (seeded): for tests and benchmarks, codes are meaningless")
    chunk_seconds: float = setting(60.0, "files longer than this are encoded in windows of this length (0: never "
                                         "chunk)", minimum=0.0, metavar="S")
    overlap_seconds: float = setting(4.0, "overlap between windows; each window keeps the codes of its own half "
                                          "of it", minimum=0.0, metavar="S")
    batch_seconds: float = setting(
        0.0, "padded audio per encoder batch (0: found from free GPU memory by a probe, remembered per codec and "
             "GPU; 10 on CPU). Longer windows are encoded in overlapping windows of this length",
        minimum=0.0, metavar="S", output=False)
    max_padding: float = setting(
        MAX_PADDING, "padding a batch may hold, as a share of its clips' own audio, for codecs that batch clips of "
             "different lengths ('masked' in 'audiomill codecs'): more gives fuller batches, less wastes less; "
             "codes are the same either way", minimum=0.0, metavar="SHARE", output=False)
    batching: str = setting(
        "exact", "exact: every code as the codec gives it for each clip alone: the 'masked' codecs of 'audiomill "
                 "codecs' (DAC, SNAC, Mimi, EnCodec 24 kHz) batch clips of any length, the others only clips of "
                 "one length; padded: clips of any length batch for every codec, so for the others codes near a "
                 "clip's end may differ (measure the share with 'audiomill bench --batching padded')",
        choices=("exact", "padded"))
    precision: str = setting(PRECISIONS[0], "encoder arithmetic; anything but fp32 may change some codes: measure it "
                                     "with 'audiomill bench --agreement' first", choices=PRECISIONS)
    compile: bool = setting(False, "torch.compile the encoder (slow start, then faster; check codes with bench "
                                   "--agreement)")
    layout: str | None = setting(
        None, "write the codes as another tool reads them instead of 'tokens': snac-layers (the SNAC pipeline's "
              "snac_layer_1..N, num_layers, token_lengths) or orpheus (SNAC 24 kHz as Orpheus-TTS' codes_list: 7 "
              "tokens a frame, offset 128266 + position * 4096)", choices=layouts.LAYOUTS, shown=True)
    weights: str | None = setting(None, hidden=True)  # resolved when the plan is made (None: random)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenizeSettings":
        return cls(**from_table(cls, data, "tokenize"))


def codec_options_of(values: dict[str, Any] | list[str]) -> dict[str, float | str]:
    """``["bandwidth=6"]`` or ``{"bandwidth": 6}`` -> ``{"bandwidth": 6.0}``: numbers become floats."""
    if not isinstance(values, (dict, list)):
        raise UsageError(f"--codec-option: expected KEY=VALUE pairs or a table such as {{bandwidth = 6}}, "
                         f"not {values!r}")
    pairs = values if isinstance(values, list) else [f"{k}={v}" for k, v in values.items()]
    options: dict[str, float | str] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--codec-option {pair!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = float(value)
        except ValueError:
            options[key.strip()] = value.strip()
    return options


def make_record(item: Item, codec_name: str, sample_rate: int, num_samples: int, tokens: list[list[int]],
                clip_outputs: dict[str, list[int]] | None = None) -> dict:
    record: dict[str, Any] = {
        "key": item.key,
        "tar_file": item.source,
        "audio_file": item.audio_file,
        "num_samples": num_samples,
        "sample_rate": sample_rate,
        "codec": codec_name,
        "tokens": tokens,
        "token_shape": [len(level) for level in tokens],
        **(clip_outputs or {}),
    }
    return with_meta(record, item, set(RESERVED) | set(clip_outputs or ()))


_checked: dict[str, Codec] = {}


def _cache_key(settings: dict[str, Any]) -> str:
    import json

    return json.dumps([settings.get(k) for k in ("codec", "weights", "codec_options")], sort_keys=True, default=str)


def code_type(cardinality: int) -> str:
    """The narrowest integer column that holds codes below ``cardinality``."""
    return "int16" if cardinality <= 2**15 else "int32"


def tokenize_fields(cardinality: int, clip_fields: tuple[str, ...] = (), layout: str | None = None,
                    levels: int = 0) -> dict[str, str]:
    """The fields of a tokenize record and their types (see :data:`audiomill.sinks.FIELD_TYPES`)."""
    return {"key": "string", "tar_file": "string", "audio_file": "string", "num_samples": "int64",
            "sample_rate": "int64", "codec": "string", **layouts.fields(layout, levels, code_type(cardinality)),
            **{name: "list<int32>" for name in clip_fields}}


class TokenizeStage(BatchedModelStage):
    """A codec behind the batched-model machinery; one record of codes per file."""

    Settings = TokenizeSettings
    command_defaults = True  # its settings at the top of a pipeline file are every tokenize stage's defaults

    @classmethod
    def check(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """Check everything loading this stage will need, before the plan is frozen; the settings to keep."""
        from audiomill.codecs import codec_info, load_codec, resolve_weights

        cfg = TokenizeSettings.from_dict(settings)
        if cfg.chunk_seconds and cfg.overlap_seconds * 2 >= cfg.chunk_seconds:
            raise UsageError("--overlap-seconds must be less than half of --chunk-seconds")
        if cfg.model_path:
            cfg.model_path = os.path.abspath(cfg.model_path)
        info = codec_info(cfg.codec)
        layouts.check(cfg.layout, cfg.codec)
        unknown = sorted(set(cfg.codec_options) - set(info.options))
        if unknown:
            raise UsageError(f"{cfg.codec} has no option {', '.join(unknown)}; its options: "
                             f"{', '.join(info.options) or 'none'}")
        cfg.weights = None if cfg.random_weights else resolve_weights(info, cfg.model_path)
        try:  # options the adapter refuses, a layout it cannot read, a missing extra: now, not on a node
            codec = load_codec(cfg.codec, cfg.weights, "cpu", cfg.codec_options)
        except ImportError as exc:
            raise UsageError(f"{cfg.codec} needs the extra audiomill[{info.extra}] ({exc}): "
                             f"pip install 'audiomill[{info.extra}]'") from None
        except (UsageError, MemoryError):
            raise
        except Exception as exc:  # a damaged checkpoint, a config the model cannot be built from
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UsageError(f"{cfg.codec}: cannot load {cfg.weights or 'random weights'}: "
                             f"{type(exc).__name__}: {reason}") from None
        kept = dataclasses.asdict(cfg)
        _checked[_cache_key(kept)] = codec  # a CPU worker in this process takes it instead of loading again
        return kept

    @classmethod
    def describe(cls, settings: dict[str, Any]) -> str:
        """What its records are, for the dataset card."""
        what = f"{settings.get('codec', '?')} codes"
        return what + (f" in the {settings['layout']} layout" if settings.get("layout") else "")

    @classmethod
    def build(cls, settings: dict[str, Any], device: str) -> "TokenizeStage":
        """The stage on ``device`` from the settings :meth:`check` kept."""
        from audiomill.codecs import load_codec

        cfg = TokenizeSettings.from_dict(settings)
        codec = _checked.pop(_cache_key(settings), None) if device == "cpu" else None
        codec = codec or load_codec(cfg.codec, cfg.weights, device, cfg.codec_options)
        stage = cls(codec, cfg.chunk_seconds, cfg.overlap_seconds, cfg.batch_seconds or CPU_BATCH_SECONDS,
                    precision=cfg.precision, compile=cfg.compile, max_padding=cfg.max_padding,
                    batching=cfg.batching, layout=cfg.layout)
        if not cfg.batch_seconds:
            stage.set_batch_seconds(batch_budget(stage, device))
        return stage

    def __init__(self, codec: Codec, window_seconds: float, overlap_seconds: float, batch_seconds: float,
                 precision: str = PRECISIONS[0], compile: bool = False, pipeline: bool | None = None,
                 max_padding: float = MAX_PADDING, batching: str = "exact", layout: str | None = None) -> None:
        self.codec = codec
        self.layout = layout
        # clips of any length batch together, zero-padded: always where the codec masks the padding
        # ("masked" codecs: every code exact), and for the others too with --batching padded (codes close)
        self.any_lengths = batching == "padded" or codec.batching == "masked"
        self.masked = codec.batching == "masked"
        self.name = codec.name
        self.featurizer = getattr(codec, "featurizer", None)  # computed in the decoders, where the codec has them
        self.clip_fields = tuple(getattr(codec, "clip_fields", ()))
        self.fields = tokenize_fields(codec.cardinality, self.clip_fields, layout, len(codec.frame_hops()))
        super().__init__(codec.sample_rate, codec.alignment, window_seconds, overlap_seconds, batch_seconds,
                         getattr(codec, "device", "cpu"), precision, compile, pipeline, max_padding)

    def model(self, tensor, lengths) -> list:
        if isinstance(tensor, dict):  # a batch of the codec's features
            return self.codec.encode_features(tensor, lengths)
        return self.codec.encode(tensor, lengths)

    def batch_key(self, num_samples: int) -> int:
        if self.masked:  # (EnCodec 24 kHz masks only clips of at least a few frames)
            return 0 if getattr(self.codec, "maskable", lambda n: True)(num_samples) else self.codec.batch_key(num_samples)
        if self.any_lengths:
            return 0
        return self.codec.batch_key(num_samples)

    def unbatch(self, clips: list[np.ndarray], codes: list) -> list[list[np.ndarray]]:
        """Per clip, its codes per level without the padding's frames."""
        arrays = [level.cpu().numpy() for level in codes]
        results = []
        for row, clip in enumerate(clips):
            frames = self.codec.num_frames(len(clip))
            results.append([arrays[level][row, ..., : frames[level]] if level < len(frames) else arrays[level][row]
                            for level in range(len(arrays))])
        return results

    def join(self, windows: list[Window], results: list[list[np.ndarray]]) -> list[np.ndarray]:
        return stitch(windows, results, self.codec.frame_hops())

    def finish(self, state: FileState, levels: list[np.ndarray]) -> FileOutput:
        hops = self.codec.frame_hops()
        clip_outputs = {name: levels[len(hops) + i].tolist() for i, name in enumerate(self.clip_fields)}
        tokens: list[list[int]] = []
        for level in levels[:len(hops)]:
            if level.ndim == 1:
                tokens.append(level.tolist())
            else:  # [codebooks, frames]: one list per codebook
                tokens.extend(row.tolist() for row in level)
        record = layouts.apply(self.layout, make_record(state.item, self.codec.name, self.codec.sample_rate,
                                                        state.num_samples, tokens, clip_outputs))
        return FileOutput(state.ticket, state.item, [record], audio_seconds=state.num_samples / self.sample_rate)
