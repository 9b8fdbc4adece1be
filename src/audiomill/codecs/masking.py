"""Full batches of clips of any length through a convolutional encoder, each clip's codes exactly
those of encoding it alone.

Why it is exact. A zero-padded convolution encoding a clip alone reads, past the clip's end,
the zeros of its own padding. In a batch zero-padded to the longest clip, the first layer
also reads zeros there; but every later layer reads what the layer before made of that
padding (its bias, its activations), not zeros. :class:`ConvMask` zeroes every
convolution's input past each clip's valid length at that layer, the length the clip alone
would have there, so that each layer reads what it would alone. The outputs within the valid
length are then computed from exactly the values they are computed from alone (the window
of an output inside the valid length never reaches past the valid input plus the padding,
as the length arithmetic of a convolution says), and the frames past a clip's own are cut
off afterwards. Multiplying the valid values by one leaves them bit for bit as they were. The
mask is applied in place, so that it costs no memory: only values past a clip's end change,
and whatever else reads them (a residual branch) reads garbage there anyway, masked again
before the next convolution uses it.

It holds for encoders made of convolutions and pointwise operations only (activations,
residual sums, per-frame quantizers): DAC's, SNAC 24 kHz's. SNAC 32/44 kHz add a local
attention (``LocalMHA``): per frame normalisation, and attention within windows of
``attn_window_size`` frames, windows counted from the first frame. SNAC pads every clip to a
multiple of those windows itself (the mask's lengths are the clips' padded lengths), so
none of a clip's windows reaches past its padded length: each window sees only the clip's
own (masked, exact) values, batched as alone.

Causal encoders (Mimi, EnCodec 24 kHz) have recurrent layers or attention too, but causal
ones: an output depends on inputs at or before it, never on what comes after the clip,
except through the right padding each convolution adds to fill its last frame (zeros, the
last value repeated, or a reflection of the clip's end). :class:`PaddingMask` fills, before
every such convolution, the region past each clip's valid length with exactly the padding
the convolution would add to that clip alone, so that its last frames read what they read
alone.

An encoder with attention over the whole clip, or normalisation over time, is not exact
either way, and keeps another batching method.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence


class ConvMask:
    """Hooks on every ``Conv1d`` of ``encoder``: while :meth:`clips` says the clips' valid lengths,
    each convolution's input is zeroed past them, and strided convolutions carry the lengths down.
    Outside :meth:`clips` the hooks do nothing."""

    def __init__(self, encoder) -> None:
        import torch

        self._lengths: list[int] | None = None
        self._masks: dict[tuple, object] = {}
        self._hooks = []
        for module in encoder.modules():
            if isinstance(module, torch.nn.Conv1d):
                self._hooks.append(module.register_forward_pre_hook(self._mask))
                self._hooks.append(module.register_forward_hook(self._carry))

    @contextlib.contextmanager
    def clips(self, lengths: Sequence[int]) -> Iterator[None]:
        """Encode a batch whose rows hold clips of these valid lengths (samples at the encoder's input)."""
        self._lengths = [int(n) for n in lengths]
        self._masks = {}  # one mask per resolution: a few host-to-device copies a batch
        try:
            yield
        finally:
            self._lengths = None
            self._masks = {}

    def _mask(self, module, args):
        import torch

        if self._lengths is None or len(self._lengths) <= 1:  # one clip: nothing is padding
            return None
        x = args[0]
        if all(length >= x.shape[-1] for length in self._lengths):  # clips of one length: no padding
            return None
        key = (x.shape[-1], tuple(self._lengths), x.dtype, x.device)
        mask = self._masks.get(key)
        if mask is None:
            lengths = torch.tensor(self._lengths, device=x.device)
            mask = (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None])[:, None, :].to(x.dtype)
            self._masks[key] = mask
        x.mul_(mask)  # in place: only what lies past a clip's end changes, and nothing reads it as the clip's
        return None

    def _carry(self, module, args, output) -> None:
        if self._lengths is not None and module.stride[0] > 1:
            self._lengths = [conv_length(n, module) for n in self._lengths]


def conv_length(length: int, conv) -> int:
    """The output length of ``conv`` (a ``Conv1d``) for an input of ``length``."""
    kernel, stride, padding, dilation = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
    return max(0, (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1)


class PaddingMask:
    """Hooks on the padding convolution wrappers of a causal encoder (transformers' ``MimiConv1d``,
    ``EncodecConv1d``): while :meth:`clips` says the clips' valid lengths, each wrapper's input past
    them holds the padding the wrapper would add to that clip alone, and the lengths follow each
    wrapper's own output arithmetic."""

    def __init__(self, encoder, wrappers: tuple[type, ...]) -> None:
        self._lengths: list[int] | None = None
        self._hooks = []
        for module in encoder.modules():
            if isinstance(module, wrappers):
                self._hooks.append(module.register_forward_pre_hook(self._pad))
                self._hooks.append(module.register_forward_hook(self._carry))

    @contextlib.contextmanager
    def clips(self, lengths: Sequence[int]) -> Iterator[None]:
        self._lengths = [int(n) for n in lengths]
        try:
            yield
        finally:
            self._lengths = None

    def _pad(self, module, args):
        if self._lengths is None or len(self._lengths) <= 1:
            return None
        x = args[0]
        width = x.shape[-1]
        if all(length >= width for length in self._lengths):
            return None
        for row, length in enumerate(self._lengths):  # in place, past each clip's end only (see ConvMask)
            if length >= width:
                continue
            x[row, :, length:] = 0
            if module.pad_mode == "replicate":
                x[row, :, length:] = x[row, :, length - 1: length]
            elif module.pad_mode == "reflect":
                count = min(width - length, wrapper_geometry(module, length)[2])
                if count >= length:  # too short to reflect as the wrapper would (it pads zeros first): refuse
                    raise ValueError(f"a clip of {length} samples at this layer is too short to mask")
                if count > 0:
                    x[row, :, length: length + count] = x[row, :, length - 1 - count: length - 1].flip(-1)
            elif module.pad_mode not in ("constant", "zero"):
                raise ValueError(f"cannot mask padding mode {module.pad_mode!r}")
        return None

    def _carry(self, module, args, output) -> None:
        if self._lengths is not None:
            self._lengths = [wrapper_geometry(module, n)[0] for n in self._lengths]


def wrapper_geometry(module, length: int) -> tuple[int, int, int]:
    """(output length, left padding, right padding) of a padding convolution wrapper for an input of
    ``length``, by the wrapper's own arithmetic (its extra padding fills the last frame)."""
    import torch

    extra = int(module._get_extra_padding_for_conv1d(torch.empty(1, 1, length, device="meta")))
    total = int(module.padding_total)
    if module.causal:
        left, right = total, extra
    else:
        left, right = total - total // 2, total // 2 + extra
    conv = module.conv
    size = length + left + right + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1
    return max(0, size // conv.stride[0] + 1), left, right
