"""``bench --stage KIND``: any other registered kind, or ``module:Class``, its settings from ``--set
KEY=VALUE``: the stage alone on pre-decoded windows (one thread), the decoders alone, and the runner end to
end. The stage and the decoders share the cores, so the ceiling is 1/(1/stage + 1/decode)."""

from __future__ import annotations

from typing import Any

from audiomill.bench.harness import Bench, ceiling, common, medians, rounds_report
from audiomill.errors import UsageError


def measure(bench: Bench) -> dict[str, Any]:
    from audiomill.stages import stage_class
    from audiomill.stages.specs import table_settings

    cfg = bench.cfg
    cls = stage_class(cfg.stage)
    settings = cls.check(table_settings(cfg.stage, dict(setting_pair(pair) for pair in cfg.set)))
    stage = cls.build(settings, "cpu")
    shards = bench.shards()
    workers = bench.decode_workers("cpu")
    rounds = []
    try:
        for _ in range(max(1, cfg.repeat)):
            end_to_end, audio_seconds, rss, decoder_rss = bench.end_to_end(stage, shards, workers)
            decode, windows = bench.decode_ceiling(stage, shards, workers)
            alone = bench.stage_ceiling(cls.build(settings, "cpu"), windows)
            both = ceiling(alone, decode, "cpu")
            files = len(windows)
            del windows
            rounds.append({"stage_ceiling": round(alone, 2), "decode_ceiling": round(decode, 2),
                           "ceiling": round(both, 2), "end_to_end": round(end_to_end, 2),
                           "end_to_end_over_ceiling": round(end_to_end / both, 3)})
    finally:
        stage.close()
    return {"stage": cfg.stage, "settings": settings, **common("cpu", workers, files, audio_seconds, rss,
                                                               decoder_rss),
            **medians(rounds), "rounds": rounds}


def setting_pair(text: str) -> tuple[str, Any]:
    """``--set KEY=VALUE``: the value as TOML reads it (2, true, "x"), else as the string."""
    import tomllib

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {text!r}: expected KEY=VALUE")
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value


def report(result: dict[str, Any]) -> str:
    return rounds_report(result, result["stage"], "one stage worker",
                         [("stage ceiling", "stage_ceiling"), ("decode ceiling", "decode_ceiling"),
                          ("ceiling", "ceiling"), ("end to end", "end_to_end")], "end to end / ceiling")
