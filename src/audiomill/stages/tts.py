"""The indextts stage: semantic codes, speaker conditioning and emotion vector of each utterance, from
one w2v-BERT pass, and IndexTTS2's training layout when a run ends.

From an IndexTTS2 release folder (``--model-path``: ``config.yaml``, ``gpt.pth``,
``wav2vec2bert_stats.pt``, ``semantic_codec/model.safetensors``, ``w2v-bert-2.0/``), each clip's
w2v-BERT layer 17 (normalised by the statistics) gives its MaskGCT semantic codes (RepCodec) and,
through audiomill's own UnifiedVoice paths (:mod:`audiomill.conditioning`), ``condition``
``[32, model_dim]`` and ``emo_vec`` ``[model_dim]``. A record::

    {"key", "tar_file", "audio_file", "duration", "codes": [int32, ...], "code_len",
     "condition": [[float32, ...], ...], "condition_len", "emo_vec": [float32, ...], <metadata>}

Codes are cut to the clip's own frames, always. The models run one clip a call: w2v-BERT's
convolutions see padding (so only clips of one exact length could share a call, about one clip on a
real corpus), and float vectors computed beside other clips differ in their last bits, which would
make a resumed run write other bytes. The filter banks are computed in the decoders.

``after_run`` writes, from the complete shards of this stage and the run's ``text`` stage, the
layout IndexTTS2's trainer reads: ``text_ids/``, ``codes/``, ``condition/``, ``emo_vec/`` (one
``<id>.npy`` each), ``train_manifest.jsonl`` and ``val_manifest.jsonl`` (split by
:func:`audiomill.text.is_validation`), and ``stats.json``; each file written whole and renamed
into place, the same bytes whenever it is written again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from audiomill.errors import UsageError
from audiomill.stages import FileOutput, with_meta
from audiomill.stages.batched import PRECISIONS, BatchedModelStage, FileState
from audiomill.stages.budget import CPU_BATCH_SECONDS
from audiomill.stages.settings import from_table, setting
from audiomill.files import write_atomic

FIELDS = {"key": "string", "tar_file": "string", "audio_file": "string", "duration": "float64",
          "codes": "list<int32>", "code_len": "int64", "condition": "list<list<float32>>", "condition_len": "int64",
          "emo_vec": "list<float32>"}
LAYOUT = {"text_ids": "text_ids", "codes": "codes", "condition": "condition", "emo_vec": "emo_vec"}
MANIFESTS = ("train_manifest.jsonl", "val_manifest.jsonl")
GPU_BATCH_SECONDS = 600.0


@dataclass
class TtsSettings:
    model_path: str = setting("", "an IndexTTS2 release folder", metavar="DIR", required=True)
    val_ratio: float = setting(0.01, "the share of ids that go to val_manifest.jsonl (IndexTTS2's SHA-1 rule)",
                               minimum=0.0, metavar="SHARE")
    batch_seconds: float = setting(0.0, "audio per model call (0: 10 s on CPU, 600 s on a GPU); halved on out of "
                                        "memory", minimum=0.0, metavar="S", output=False)
    precision: str = setting(PRECISIONS[0], "the models' precision on a GPU", choices=PRECISIONS)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TtsSettings":
        cfg = cls(**from_table(cls, data, "indextts"))
        ratio = cfg.val_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise UsageError(f"--val-ratio {cfg.val_ratio!r}: expected a share between 0 and 1")
        if cfg.precision not in PRECISIONS:
            raise UsageError(f"--precision {cfg.precision}: expected one of {', '.join(PRECISIONS)}")
        return cfg


def _load(model_path: str, device: str):
    from audiomill.codecs import WeightsNotFound, codec_info, load_codec, resolve_weights
    from audiomill.conditioning import load_conditioning

    if not model_path:
        raise UsageError("--model-path DIR is needed: an IndexTTS2 release folder (config.yaml, gpt.pth, "
                         "wav2vec2bert_stats.pt, semantic_codec/model.safetensors, w2v-bert-2.0/)")
    for name in ("config.yaml", "gpt.pth"):
        if not os.path.isfile(os.path.join(model_path, name)):
            raise UsageError(f"--model-path {model_path} has no {name} (an IndexTTS2 release folder has)")
    try:
        codec = load_codec("maskgct-semantic", resolve_weights(codec_info("maskgct-semantic"), model_path), device)
    except WeightsNotFound as exc:
        raise UsageError(str(exc)) from None
    try:
        conditioning = load_conditioning(model_path, device)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UsageError(f"{model_path}: cannot build the conditioning paths: {exc}") from None
    width = conditioning.emovec_layer.in_features
    if width != codec.model.config.hidden_size:
        raise UsageError(f"{model_path}: gpt.pth expects {width}-wide features, w2v-BERT gives "
                         f"{codec.model.config.hidden_size}")
    return codec, conditioning


_checked: dict[str, Any] = {}


class TtsStage(BatchedModelStage):
    name = "indextts"
    fields = FIELDS
    cuttable = False
    Settings = TtsSettings

    @classmethod
    def check(cls, settings: dict[str, Any]) -> dict[str, Any]:
        cfg = TtsSettings.from_dict(settings)
        cfg.model_path = os.path.abspath(cfg.model_path) if cfg.model_path else ""
        _checked[cfg.model_path] = _load(cfg.model_path, "cpu")
        return dataclasses.asdict(cfg)

    @classmethod
    def build(cls, settings: dict[str, Any], device: str) -> "TtsStage":
        cfg = TtsSettings.from_dict(settings)
        parts = _checked.pop(cfg.model_path, None) if device == "cpu" else None
        codec, conditioning = parts or _load(cfg.model_path, device)
        seconds = cfg.batch_seconds or (GPU_BATCH_SECONDS if device.startswith("cuda") else CPU_BATCH_SECONDS)
        return cls(codec, conditioning, seconds, device, cfg.precision)

    @classmethod
    def after_run(cls, folder, group: str) -> None:
        write_layout(folder, group)

    @classmethod
    def published_files(cls, folder, group: str) -> list[str]:
        """What ``push`` uploads of the layout (relative to ``--out``): the two manifests, ``stats.json``
        and the arrays the manifests name, nothing else that may lie in those folders."""
        files = []
        for name in (*MANIFESTS, "stats.json"):
            if os.path.isfile(os.path.join(folder.out, name)):
                files.append(name)
        for name in MANIFESTS:
            path = os.path.join(folder.out, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as handle:
                    for line in handle:
                        entry = json.loads(line)
                        files += [entry[f"{kind}_path"] for kind in LAYOUT]
        return files

    def __init__(self, codec, conditioning, batch_seconds: float, device: str = "cpu", precision: str = "fp32") -> None:
        self.codec = codec
        self.conditioning = conditioning
        self.featurizer = codec.featurizer
        super().__init__(codec.sample_rate, codec.alignment, 0.0, 0.0, batch_seconds, device, precision)
        # One clip a model call. Its vectors are floats: computed beside another clip they differ in the last
        # bits, so a resumed run (other neighbours) would write other bytes. Exact-length buckets hold about
        # one clip on a real corpus anyway (BENCHMARKS.md, issue 14: 1.00 clips a batch).
        self.batcher.max_pieces = 1

    def batch_key(self, num_samples: int) -> int:
        return self.codec.batch_key(num_samples)

    def model(self, inputs, lengths):
        features = self.codec.semantic_features(inputs)
        codes = self.codec.codes_of(features)[0][:, 0]  # [B, T]
        frames = inputs["attention_mask"].to(features.device).sum(1)
        condition, emotion = self.conditioning(features.float(), frames)
        return codes, condition, emotion

    def unbatch(self, clips, outputs) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        codes, condition, emotion = (t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy()
                                     for t in outputs)
        results = []
        for row, clip in enumerate(clips):
            frames = self.codec.num_frames(len(clip))[0]
            results.append((codes[row, :frames].astype(np.int32), condition[row].astype(np.float32),
                            emotion[row].astype(np.float32)))
        return results

    def finish(self, state: FileState, result) -> FileOutput:
        codes, condition, emotion = result
        item = state.item
        record = {"key": item.key, "tar_file": item.source, "audio_file": item.audio_file,
                  "duration": round(state.num_samples / self.sample_rate, 6), "codes": codes.tolist(),
                  "code_len": int(codes.size), "condition": condition.tolist(),
                  "condition_len": int(condition.shape[0]),
                  "emo_vec": emotion.tolist()}
        return FileOutput(state.ticket, item, [with_meta(record, item, set(FIELDS) | {"error"})],
                          audio_seconds=state.num_samples / self.sample_rate)


# -- IndexTTS2's layout ---------------------------------------------------------------------------------


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _put(path: str, data: bytes) -> None:
    """``data`` at ``path`` unless it is there already, through a temporary file and a rename."""
    if os.path.isfile(path) and os.path.getsize(path) == len(data):
        with open(path, "rb") as handle:
            if handle.read() == data:
                return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _sha256(path: str) -> str | None:
    if not path or not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_layout(folder, group: str) -> None:
    """IndexTTS2's layout at the output folder's top, from the complete shards of ``group`` (this stage) and
    of the run's text stage; utterances that failed in either are left out (their error records say why)."""
    from audiomill.stages.vad import audio_filepath
    from audiomill.text import is_validation

    outputs = folder.plan().outputs
    mine = next(o for o in outputs if o.group == group)
    text = next((o for o in outputs if o.kind == "text"), None)
    if text is None:  # records only: the layout needs the text ids too
        return
    texts = {r["key"]: r for r in folder.complete_records(text.group, errors=False)}
    root = folder.out
    manifests: dict[bool, list[str]] = {False: [], True: []}
    errors = 0
    for record in folder.complete_records(group):
        if record.get("error") is not None:
            errors += 1
            continue
        key = record["key"]
        words = texts.get(key)
        if words is None:
            continue
        arrays = {"text_ids": np.asarray(words["text_ids"], dtype=np.int32),
                  "codes": np.asarray(record["codes"], dtype=np.int32),
                  "condition": np.asarray(record["condition"], dtype=np.float32),
                  "emo_vec": np.asarray(record["emo_vec"], dtype=np.float32)}
        paths = {name: f"{LAYOUT[name]}/{key}.npy" for name in arrays}
        for name, array in arrays.items():
            _put(os.path.join(root, paths[name]), _npy(array))
        meta = {**(words.get("meta") or {}), **words}
        entry = {"id": key, "audio_path": audio_filepath(record.get("tar_file") or "", record.get("audio_file") or ""),
                 "text": words["text"], "speaker": meta.get("speaker") or "", "language": words.get("language") or "",
                 "duration": record["duration"], "text_ids_path": paths["text_ids"],
                 "text_len": int(arrays["text_ids"].size),
                 "codes_path": paths["codes"], "code_len": int(arrays["codes"].size),
                 "condition_path": paths["condition"], "condition_len": int(arrays["condition"].shape[0]),
                 "emo_vec_path": paths["emo_vec"]}
        manifests[is_validation(key, mine.settings["val_ratio"])].append(json.dumps(entry, ensure_ascii=False))
    text_settings = text.settings
    model_path = mine.settings["model_path"]
    stats = {"total": len(manifests[False]) + len(manifests[True]), "train": len(manifests[False]),
             "val": len(manifests[True]), "val_ratio": mine.settings["val_ratio"], "errors": errors,
             "tokenizer": text_settings.get("tokenizer"), "tokenizer_sha256": _sha256(text_settings.get("tokenizer")),
             "gpt_checkpoint": os.path.join(model_path, "gpt.pth"),
             "gpt_checkpoint_sha256": _sha256(os.path.join(model_path, "gpt.pth"))}
    for validation, name in ((False, MANIFESTS[0]), (True, MANIFESTS[1])):
        write_atomic(os.path.join(root, name), "".join(line + "\n" for line in manifests[validation]), clear_left=True)
    write_atomic(os.path.join(root, "stats.json"), json.dumps(stats, indent=2, ensure_ascii=False) + "\n",
                 clear_left=True)
