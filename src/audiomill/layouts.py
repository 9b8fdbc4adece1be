"""Record layouts that other tools read (``--layout``): a record's codes in their fields, and back.

- ``snac-layers``: the SNAC pipeline's ``snac_layer_1`` ... ``snac_layer_N`` (one list of codes per
  level, coarsest first), ``num_layers`` and ``token_lengths``; any SNAC codec.
- ``orpheus``: SNAC 24 kHz codes as Orpheus-TTS reads them, ``codes_list``: per coarse frame ``j``
  seven tokens ``c0[j], c1[2j], c2[4j], c2[4j+1], c1[2j+1], c2[4j+2], c2[4j+3]``, the token at
  position ``p`` of the seven offset by ``128266 + p * 4096``.

A layout replaces the record's ``tokens`` and ``token_shape``; :func:`tokens_of` gives the codes
back from any record (``resynth`` reads every layout).
"""

from __future__ import annotations

from typing import Any

from audiomill.errors import UsageError

LAYOUTS = ("snac-layers", "orpheus")
ORPHEUS_BASE = 128266  # Orpheus-TTS' first audio token (its text vocabulary and special tokens come before)
ORPHEUS_BOOK = 4096  # the id range of each of the seven positions
ORPHEUS_ORDER = ((0, 0), (1, 0), (2, 0), (2, 1), (1, 1), (2, 2), (2, 3))  # (level, index within the frame)
# every field a layout may write (metadata of the same name is not allowed to overwrite them)
FIELD_NAMES = ("codes_list", "num_layers", "token_lengths", *(f"snac_layer_{n}" for n in range(1, 9)))


def check(layout: str | None, codec: str) -> None:
    """``layout`` exists and can hold ``codec``'s codes; fails in one line before any work."""
    if layout is None:
        return
    if layout not in LAYOUTS:
        raise UsageError(f"--layout {layout}: expected one of {', '.join(LAYOUTS)}")
    if layout == "snac-layers" and not codec.startswith("snac-"):
        raise UsageError(f"--layout snac-layers holds SNAC codes, not {codec}'s: use --codec snac-24khz, "
                         f"snac-32khz or snac-44khz")
    if layout == "orpheus" and codec != "snac-24khz":
        raise UsageError(f"--layout orpheus holds SNAC 24 kHz codes (Orpheus-TTS reads nothing else), not {codec}'s")


def fields(layout: str | None, levels: int, code_type: str) -> dict[str, str]:
    """The fields (and their types) that ``layout`` writes in place of ``tokens`` and ``token_shape``."""
    if layout == "snac-layers":
        return {**{f"snac_layer_{n}": f"list<{code_type}>" for n in range(1, levels + 1)},
                "num_layers": "int64", "token_lengths": "list<int32>"}
    if layout == "orpheus":
        return {"codes_list": "list<int32>"}
    return {"tokens": f"codes<{code_type}>", "token_shape": "shape"}


def apply(layout: str | None, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its ``tokens`` (and ``token_shape``) written in ``layout``, in place of them."""
    if layout is None:
        return record
    tokens = record["tokens"]
    laid: dict[str, Any] = {}
    if layout == "snac-layers":
        laid.update({f"snac_layer_{n}": level for n, level in enumerate(tokens, 1)})
        laid.update(num_layers=len(tokens), token_lengths=[len(level) for level in tokens])
    else:
        laid["codes_list"] = orpheus_codes(tokens)
    out: dict[str, Any] = {}
    for name, value in record.items():  # the layout's fields where tokens were, the rest in order
        if name == "tokens":
            out.update(laid)
        elif name != "token_shape":
            out[name] = value
    return out


def orpheus_codes(tokens: list[list[int]]) -> list[int]:
    coarse, middle, fine = tokens
    frames = len(coarse)
    if len(middle) != 2 * frames or len(fine) != 4 * frames:
        raise ValueError(f"SNAC levels of {frames}, {len(middle)} and {len(fine)} frames are not 1:2:4")
    codes = []
    for frame in range(frames):
        for position, (level, index) in enumerate(ORPHEUS_ORDER):
            code = tokens[level][(1 << level) * frame + index]
            codes.append(ORPHEUS_BASE + position * ORPHEUS_BOOK + code)
    return codes


def tokens_of(record: dict[str, Any]) -> list[list[int]] | None:
    """The codes of a record in any layout (None if it holds none)."""
    if "tokens" in record:
        return record["tokens"]
    if "codes_list" in record:
        codes = record["codes_list"]
        levels: list[list[int]] = [[], [], []]
        for frame in range(len(codes) // 7):
            group = codes[7 * frame : 7 * frame + 7]
            for position, (level, _) in enumerate(ORPHEUS_ORDER):
                levels[level].append(group[position] - ORPHEUS_BASE - position * ORPHEUS_BOOK)
        # within a frame, ORPHEUS_ORDER lists each level's codes in order: appending keeps them in order
        return levels
    if "snac_layer_1" in record:
        return [record[f"snac_layer_{n}"] for n in range(1, int(record.get("num_layers") or 0) + 1)]
    return None
