"""IndexTTS2's conditioning latents and emotion vector: audiomill's modules against UnifiedVoice itself.

The reference is `indextts2-inference` (installed with --no-deps, test only; its package __init__
pulls torchaudio, so only its model module is imported). A tiny UnifiedVoice is saved as a release is
laid out (config.yaml's gpt section, gpt.pth), loaded through audiomill's loader, and compared on
clips of several lengths; batched vectors must equal single ones.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from audiomill.conditioning import load_conditioning

GPT = dict(layers=1, model_dim=64, heads=2, max_text_tokens=20, max_mel_tokens=20, number_text_tokens=32,
           number_mel_codes=40, start_mel_token=38, stop_mel_token=39, condition_type="conformer_perceiver",
           condition_num_latent=32,
           condition_module=dict(output_size=32, linear_units=64, attention_heads=2, num_blocks=2,
                                 input_layer="conv2d2", perceiver_mult=2),
           emo_condition_module=dict(output_size=32, linear_units=48, attention_heads=2, num_blocks=1,
                                     input_layer="conv2d2", perceiver_mult=2))
LENGTHS = (37, 50, 23, 8)  # w2v-BERT frames (50 a second)


def unified_voice():
    spec = importlib.util.find_spec("indextts")
    if spec is None:
        pytest.fail("the reference is missing: pip install --no-deps indextts2-inference==2.1.1 (make test-deps)")
    if "indextts" not in sys.modules:  # the package without its __init__ (which imports torchaudio)
        package = types.ModuleType("indextts")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["indextts"] = package
    from indextts.gpt.model_v2 import UnifiedVoice

    return UnifiedVoice


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny UnifiedVoice with every bias, position bias, latent and norm scale randomised (they start at
    zero or one), saved as config.yaml + gpt.pth."""
    import yaml

    torch.manual_seed(0)
    reference = unified_voice()(**GPT).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if name.endswith(("bias", "pos_bias_u", "pos_bias_v", "latents", "gamma")):
                parameter.normal_(0.0, 0.3)
    folder = tmp_path_factory.mktemp("indextts2")
    torch.save({"model": reference.state_dict()}, folder / "gpt.pth")
    (folder / "config.yaml").write_text(yaml.safe_dump({"gpt": GPT, "w2v_stat": "wav2vec2bert_stats.pt"}))
    return reference, str(folder)


def features() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(n, 1024, generator=generator) for n in LENGTHS]


def test_vectors_equal_unified_voices_for_every_clip(release):
    reference, folder = release
    ours = load_conditioning(folder)
    with torch.inference_mode():
        for clip in features():
            lengths = torch.tensor([clip.shape[0]])
            condition, emotion = ours(clip[None], lengths)
            assert condition.shape == (1, 32, 64) and emotion.shape == (1, 64)
            assert torch.allclose(condition, reference.get_conditioning(clip[None].transpose(1, 2), lengths),
                                  atol=1e-5, rtol=0)
            assert torch.allclose(emotion, reference.get_emovec(clip[None], lengths), atol=1e-5, rtol=0)
            assert emotion.std() > 0.01 and condition[0].std(0).mean() > 0.01  # vectors that vary


def test_batched_vectors_equal_single_ones(release):
    reference, folder = release
    ours = load_conditioning(folder)
    clips = features()
    lengths = torch.tensor(LENGTHS)
    batch = torch.zeros(len(clips), max(LENGTHS), 1024)
    for row, clip in enumerate(clips):
        batch[row, : clip.shape[0]] = clip
    with torch.inference_mode():
        conditions, emotions = ours(batch, lengths)
        for row, clip in enumerate(clips):
            condition, emotion = ours(clip[None], lengths[row : row + 1])
            assert torch.allclose(conditions[row], condition[0], atol=1e-5, rtol=0)
            assert torch.allclose(emotions[row], emotion[0], atol=1e-5, rtol=0)
        # the reference itself is not: its convolution module sees the padding (the bias of its gated unit)
        padded = reference.get_conditioning(batch.transpose(1, 2), lengths)
        alone = reference.get_conditioning(clips[0][None].transpose(1, 2), lengths[:1])
        assert not torch.allclose(padded[0], alone[0], atol=1e-5, rtol=0)


def test_a_checkpoint_without_the_conditioning_weights_is_refused(release, tmp_path):
    import shutil

    _, folder = release
    shutil.copy(f"{folder}/config.yaml", tmp_path / "config.yaml")
    state = torch.load(f"{folder}/gpt.pth", weights_only=True)["model"]
    torch.save({k: v for k, v in state.items() if not k.startswith("emo_layer.")}, tmp_path / "gpt.pth")
    with pytest.raises(ValueError, match="lacks 2 conditioning weights"):
        load_conditioning(str(tmp_path))
