"""Speech recognition backends, and the signs of a hallucinated transcript.

A backend turns clips (mono float32 at 16 kHz) into :class:`Transcript`\\ s, one per clip, the
same whatever clips share its call:

- ``whisper``: transformers' ``WhisperForConditionalGeneration``. Clips up to 30 s are padded
  to 30 s by Whisper's own feature extractor (its log-mel is normalised per clip), so a batch
  gives each clip the encoder input it has alone; the decoder's rows are independent, so
  batched text equals single-clip text. A first decoder step on the start token gives each
  clip's no-speech probability and, unless ``language`` is forced, its language (as
  transformers' own detection does); generation then runs with those languages. A clip's new
  tokens are limited by its duration (``max_tokens_per_second``), per row, so that a looping
  decoder stops and the limit does not depend on the batch. Clips over 30 s go one at a time
  through transformers' long-form (sequential, timestamped) generation.
- ``faster-whisper``: a CTranslate2 conversion of a Whisper checkpoint through faster-whisper, one clip
  a call (its own batching is over the chunks of one long file), greedy at temperature 0 only (no
  sampled fallback: a rerun gives the same text), without timestamps up to 30 s.
- ``pocketsphinx``: CMU PocketSphinx with the English model inside its wheel, or a JSGF grammar
  (``grammar``) for constrained corpora; one clip at a time, a fresh utterance each.

:func:`flags` gives the hallucination signs a transcript shows.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

RATE = 16000
LONG_FORM = 30 * RATE  # Whisper's window: longer clips take the long-form path
BACKENDS = ("whisper", "faster-whisper", "pocketsphinx")
TASKS = ("transcribe", "translate")
MAX_TOKENS_PER_SECOND = 12.0  # new tokens a clip may have per second of it (+ 8): a looping decoder stops


@dataclass
class Transcript:
    text: str
    language: str | None = None
    confidence: float | None = None  # the mean token probability (geometric)
    no_speech_prob: float | None = None


class BackendError(Exception):
    """A backend that cannot be loaded as asked: one line for the user."""


# -- the signs of a hallucination ------------------------------------------------------------------


def repeated(text: str, longest: int = 4, times: int = 4, ratio: float = 2.4) -> bool:
    """A word n-gram (n <= ``longest``) said ``times`` times in a row, or text that compresses more
    than ``ratio`` (Whisper's own test of a looping decoder, for texts of 60 characters or more)."""
    words = text.lower().split()
    for n in range(1, longest + 1):
        run = 1
        for start in range(n, len(words) - n + 1, 1):
            if words[start : start + n] == words[start - n : start]:
                run += 1
                if run >= times:
                    return True
                continue
            run = 1
    data = text.encode("utf-8")
    return len(data) >= 60 and len(data) / len(zlib.compress(data)) > ratio


def flags(transcript: Transcript, seconds: float, max_chars_per_second: float,
          no_speech_threshold: float) -> list[str]:
    """The hallucination signs of ``transcript`` of a clip of ``seconds``."""
    found = []
    if transcript.text and repeated(transcript.text):
        found.append("repetition")
    if len(transcript.text) > max_chars_per_second * max(seconds, 1.0):
        found.append(f"too long: {len(transcript.text)} characters in {seconds:.2f} s")
    if transcript.no_speech_prob is not None and transcript.no_speech_prob > no_speech_threshold:
        found.append(f"no speech: probability {transcript.no_speech_prob:.2f}")
    return found


def _check_language_and_task(language: str | None, task: str, known) -> None:
    """A Whisper model's ``--language`` among those it knows, and ``--task`` one it has."""
    if language is not None and language not in known:
        raise BackendError(f"--language {language}: this model knows {', '.join(sorted(known)) or 'none'}")
    if task not in TASKS:
        raise BackendError(f"--task {task}: expected one of {', '.join(TASKS)}")


# -- whisper ------------------------------------------------------------------------------------------


class Whisper:
    name = "whisper"
    batched = True
    gpu = True

    def __init__(self, path: str, device: str = "cpu", precision: str = "fp32", language: str | None = None,
                 task: str = TASKS[0], max_tokens_per_second: float = MAX_TOKENS_PER_SECOND) -> None:
        import torch
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        if torch.device(device).type == "cpu":
            dtype = torch.float32
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = WhisperForConditionalGeneration.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.features = WhisperFeatureExtractor.from_pretrained(path)
        self.tokenizer = WhisperTokenizer.from_pretrained(path)
        config = self.model.generation_config
        self.languages = {token.strip("<|>"): number for token, number in (getattr(config, "lang_to_id", None)
                                                                          or {}).items()}
        _check_language_and_task(language, task, self.languages)
        self.language = language
        self.task = task if self.languages else None
        self.no_speech = self.tokenizer.convert_tokens_to_ids("<|nospeech|>")
        if not isinstance(self.no_speech, int) or self.no_speech == self.tokenizer.unk_token_id:
            self.no_speech = self.tokenizer.convert_tokens_to_ids("<|nocaptions|>")  # older checkpoints' name
        self.max_tokens_per_second = max_tokens_per_second
        self.first_timestamp = int(config.no_timestamps_token_id) + 1
        self.max_new = int(self.model.config.max_target_positions) // 2 - 8

    def transcribe(self, clips: list[np.ndarray]) -> list[Transcript]:
        import torch

        with torch.inference_mode():
            return self._transcribe(clips)

    def _transcribe(self, clips: list[np.ndarray]) -> list[Transcript]:
        results: dict[int, Transcript] = {}
        short = [i for i, clip in enumerate(clips) if len(clip) <= LONG_FORM]
        if short:
            results.update(zip(short, self._short([clips[i] for i in short])))
        for i, clip in enumerate(clips):
            if len(clip) > LONG_FORM:
                results[i] = self._long(clip)
        return [results[i] for i in range(len(clips))]

    def _inputs(self, clips: list[np.ndarray], long: bool = False):
        extra = {"truncation": False, "padding": "longest"} if long else {}
        inputs = self.features(clips, sampling_rate=RATE, return_tensors="pt", return_attention_mask=True, **extra)
        return (inputs.input_features.to(self.device, self.dtype), inputs.attention_mask.to(self.device))

    def _first_step(self, encoded) -> tuple[list[str | None], list[float | None]]:
        """Per clip its language (forced, or the likeliest language token) and no-speech probability, from
        the encoder's output of its first 30 s."""
        import torch

        rows = len(encoded.last_hidden_state)
        start = torch.full((rows, 1), self.model.generation_config.decoder_start_token_id, device=self.device)
        logits = self.model(encoder_outputs=encoded, decoder_input_ids=start).logits[:, -1].float()
        probs = logits.softmax(-1)
        no_speech = [float(p) for p in probs[:, self.no_speech]] if isinstance(self.no_speech, int) else [None] * rows
        if self.language is not None or not self.languages:
            return [self.language] * rows, no_speech
        names = list(self.languages)
        ids = torch.tensor([self.languages[n] for n in names], device=self.device)
        return [names[int(i)] for i in logits[:, ids].argmax(-1)], no_speech

    def _short(self, clips: list[np.ndarray]) -> list[Transcript]:
        features, _ = self._inputs(clips)
        encoded = self.model.get_encoder()(features)  # once, for the first step and for generate
        languages, no_speech = self._first_step(encoded)
        limits = [int(len(clip) / RATE * self.max_tokens_per_second) + 8 for clip in clips]
        out = self.model.generate(encoder_outputs=encoded, **self._task(languages),
                                  max_new_tokens=min(max(limits), self.max_new), return_dict_in_generate=True,
                                  output_scores=True,
                                  logits_processor=_limits(limits, self.tokenizer.eos_token_id, self.first_timestamp),
                                  force_unique_generate_call=True)
        scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        new = out.sequences[:, -scores.shape[1]:] if scores.shape[1] else out.sequences[:, :0]
        results = []
        for row in range(len(clips)):
            tokens, logprobs = [], []
            for token, score in zip(new[row].tolist(), scores[row].tolist()):
                if token == self.tokenizer.eos_token_id:
                    break
                tokens.append(token)
                logprobs.append(score)
            confidence = float(np.exp(np.mean(logprobs))) if logprobs else None
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            results.append(Transcript(text, languages[row], confidence, no_speech[row]))
        return results

    def _long(self, clip: np.ndarray) -> Transcript:
        features, mask = self._inputs([clip], long=True)
        languages, no_speech = self._first_step(self.model.get_encoder()(features[..., :3000]))
        out = self.model.generate(features, attention_mask=mask, **self._task(languages), return_timestamps=True,
                                  condition_on_prev_tokens=False,
                                  max_new_tokens=min(int(30 * self.max_tokens_per_second) + 8, self.max_new))
        sequences = out["sequences"] if isinstance(out, dict) else out
        text = self.tokenizer.decode(sequences[0], skip_special_tokens=True).strip()
        return Transcript(text, languages[0], None, no_speech[0])

    def _task(self, languages: list[str | None]) -> dict[str, Any]:
        if self.task is None:  # an English-only model: no language or task tokens
            return {}
        return {"task": self.task, **({"language": languages} if languages[0] is not None else {})}


def _limits(limits: list[int], eos: int, first_timestamp: int):
    from transformers import LogitsProcessorList

    return LogitsProcessorList([_ShortForm(limits, eos, first_timestamp)])


class _ShortForm:
    """A logits processor for clips of one window, transcribed without timestamps: no timestamp token
    (a looping decoder may still pick one, and transformers would then decode the clip again from
    there), and row ``i`` adds at most ``limits[i]`` tokens, then only the end token."""

    def __init__(self, limits: list[int], eos: int, first_timestamp: int) -> None:
        self.limits = limits
        self.eos = eos
        self.first_timestamp = first_timestamp
        self.prompt: int | None = None

    def __call__(self, input_ids, scores):
        if self.prompt is None:
            self.prompt = input_ids.shape[1]
        scores[:, self.first_timestamp:] = float("-inf")
        made = input_ids.shape[1] - self.prompt
        for row, limit in enumerate(self.limits[: len(scores)]):
            if made >= limit:
                scores[row, :] = float("-inf")
                scores[row, self.eos] = 0.0
        return scores


# -- faster-whisper ------------------------------------------------------------------------------------


class FasterWhisper:
    name = "faster-whisper"
    batched = False
    gpu = True

    def __init__(self, path: str, device: str = "cpu", precision: str = "fp32", language: str | None = None,
                 task: str = TASKS[0], max_tokens_per_second: float = MAX_TOKENS_PER_SECOND) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise BackendError(f"faster-whisper is not installed ({exc}): "
                               f"pip install 'audiomill[faster-whisper]'") from None
        kind, _, index = device.partition(":")
        compute = {"fp16": "float16", "bf16": "bfloat16"}.get(precision, "float32") if kind == "cuda" else "float32"
        self.model = WhisperModel(path, device=kind, device_index=int(index or 0), compute_type=compute,
                                  cpu_threads=0, num_workers=1)
        _check_language_and_task(language, task, self.model.supported_languages)
        self.language = language
        self.task = task
        self.max_tokens_per_second = max_tokens_per_second

    def transcribe(self, clips: list[np.ndarray]) -> list[Transcript]:
        results = []
        for clip in clips:
            short = len(clip) <= LONG_FORM
            limit = int((len(clip) / RATE if short else 30) * self.max_tokens_per_second) + 8
            segments, info = self.model.transcribe(
                clip, language=self.language, task=self.task, beam_size=1, temperature=0.0,
                condition_on_previous_text=False, without_timestamps=short, vad_filter=False,
                max_new_tokens=min(limit, 440))
            segments = list(segments)
            text = "".join(segment.text for segment in segments).strip()
            logprobs = [segment.avg_logprob for segment in segments]
            confidence = float(np.exp(np.mean(logprobs))) if logprobs else None
            no_speech = float(segments[0].no_speech_prob) if segments else None
            results.append(Transcript(text, info.language, confidence, no_speech))
        return results


# -- pocketsphinx ---------------------------------------------------------------------------------------


class PocketSphinx:
    name = "pocketsphinx"
    batched = False
    gpu = False

    def __init__(self, grammar: str | None = None, model_path: str | None = None) -> None:
        try:
            from pocketsphinx import Config, Decoder
        except ImportError as exc:
            raise BackendError(f"pocketsphinx is not installed ({exc}): "
                               f"pip install 'audiomill[pocketsphinx]'") from None
        options: dict[str, Any] = {"loglevel": "FATAL"}
        if model_path:  # a folder with an acoustic model (hmm/), a dictionary (*.dict) and optionally an LM
            options.update(_sphinx_model(model_path))
        if grammar:
            options["jsgf"] = grammar
            options.pop("lm", None)
        config = Config(**options)
        dictionary = config["dict"]
        if grammar:
            missing = _grammar_words(grammar) - _dictionary_words(dictionary)
            if missing:
                shown = ", ".join(sorted(missing)[:10]) + (" ..." if len(missing) > 10 else "")
                raise BackendError(f"--grammar {grammar}: {len(missing)} word(s) not in the dictionary "
                                   f"{os.path.basename(dictionary)}: {shown}")
        try:
            self.decoder = Decoder(config)
        except RuntimeError as exc:
            raise BackendError(f"pocketsphinx cannot start with {grammar or 'its English model'}: {exc}") from None
        self.logmath = self.decoder.get_logmath()

    def transcribe(self, clips: list[np.ndarray]) -> list[Transcript]:
        results = []
        for clip in clips:
            pcm = (np.clip(clip, -1.0, 32767 / 32768) * 32768).astype(np.int16).tobytes()
            # The feature front end carries its live CMN estimate from one utterance to the next, so without
            # this a clip's words would depend on which clips this process decoded before it (0.1 ms).
            self.decoder.reinit_feat()
            self.decoder.start_utt()
            self.decoder.process_raw(pcm, full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            text = hyp.hypstr.strip() if hyp is not None else ""
            confidence = float(self.logmath.exp(hyp.prob)) if hyp is not None and text else None
            results.append(Transcript(text, "en", confidence, None))
        return results


def _sphinx_model(folder: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "mdef")):
            found["hmm"] = path
        elif name.endswith(".dict"):
            found["dict"] = path
        elif name.endswith((".lm", ".lm.bin", ".lm.gz")):
            found["lm"] = path
    if "hmm" not in found or "dict" not in found:
        raise BackendError(f"--model-path {folder}: a pocketsphinx model folder holds an acoustic model folder "
                           f"(with mdef) and a .dict file")
    return found


def _grammar_words(path: str) -> set[str]:
    """The words of a JSGF grammar's rules (what is not a rule name, a tag or an operator)."""
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as exc:
        raise BackendError(f"--grammar {path}: {exc}") from None
    text = re.sub(r"//[^\n]*|/\*.*?\*/", " ", text, flags=re.S)
    words = set()
    for statement in text.split(";"):
        if "=" not in statement:
            continue
        body = statement.split("=", 1)[1]
        body = re.sub(r"<[^>]*>|\{[^}]*\}|/[^/]*/", " ", body)
        words.update(w.lower() for w in re.findall(r"[^\s()\[\]|*+]+", body))
    return words


def _dictionary_words(path: str) -> set[str]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return {line.split()[0].lower().split("(")[0] for line in handle if line.strip()}


def load_backend(name: str, model_path: str | None, device: str = "cpu", precision: str = "fp32",
                 language: str | None = None, task: str = "transcribe", grammar: str | None = None,
                 max_tokens_per_second: float = MAX_TOKENS_PER_SECOND):
    if name == "whisper":
        if not model_path:
            raise BackendError("whisper needs its weights: --model-path DIR (a transformers Whisper checkpoint)")
        return Whisper(model_path, device, precision, language, task, max_tokens_per_second)
    if name == "faster-whisper":
        if not model_path:
            raise BackendError("faster-whisper needs its model: --model-path DIR (a CTranslate2 conversion: "
                               "model.bin, config.json, tokenizer.json, preprocessor_config.json)")
        return FasterWhisper(model_path, device, precision, language, task, max_tokens_per_second)
    if name == "pocketsphinx":
        if language not in (None, "en"):
            raise BackendError(f"--language {language}: pocketsphinx's model here is English")
        return PocketSphinx(grammar, model_path)
    raise BackendError(f"--backend {name}: expected one of {', '.join(BACKENDS)}")


# -- a tiny Whisper for tests and `bench --tiny` -----------------------------------------------------------

TINY_LANGUAGES = ("en", "de", "fr", "es", "zh")


def save_tiny_whisper(folder: str, seed: int = 0, d_model: int = 64, layers: int = 2, heads: int = 2,
                      vocab_size: int = 0) -> str:
    """A tiny random Whisper saved as a hub checkpoint is (config, generation config, safetensors, tokenizer,
    feature extractor): byte-level tokens, the special tokens in Whisper's order, and weights large enough
    that what it says depends on what it hears. ``d_model=384, layers=4, heads=6, vocab_size=51865`` is
    the size of OpenAI's whisper-tiny (for benchmarks: what it costs, not what it says)."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {char: number for number, char in enumerate(bytes_to_unicode().values())}
    specials = (["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{code}|>" for code in TINY_LANGUAGES]
                + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
                   "<|notimestamps|>"] + [f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_tokens(specials, special_tokens=True)
    if vocab_size > len(tokenizer):  # filler tokens, after the timestamps: never chosen in short-form
        tokenizer.add_tokens([f"<|filler{i}|>" for i in range(vocab_size - len(tokenizer))], special_tokens=True)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials[:13]}
    end, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
                           encoder_attention_heads=heads, decoder_attention_heads=heads,
                           encoder_ffn_dim=(2 if d_model < 128 else 4) * d_model,
                           decoder_ffn_dim=(2 if d_model < 128 else 4) * d_model, num_mel_bins=80,
                           max_source_positions=1500,
                           max_target_positions=448, pad_token_id=end, bos_token_id=end, eos_token_id=end,
                           decoder_start_token_id=start, begin_suppress_tokens=[], suppress_tokens=[])
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0.0, 0.3)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, eos_token_id=end, pad_token_id=end, bos_token_id=end,
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"], is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in TINY_LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        max_initial_timestamp_index=50, max_length=448, begin_suppress_tokens=[], suppress_tokens=[])
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def backend_class(name: str) -> type:
    return {"whisper": Whisper, "faster-whisper": FasterWhisper, "pocketsphinx": PocketSphinx}[name]
