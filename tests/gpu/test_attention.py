"""The backbone's attention runs through SDPA (fused kernels on CUDA), and SDPA trains
exactly what eager attention trains: the same loss and gradients, compared in float64."""

from __future__ import annotations

import copy

import numpy as np
import torch

from trainables.mobile_vla.backbone import save_backbone
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.frame_batches import FrameBatches
from trainables.mobile_vla.modeling_mobile_vla import build_policy

# float64 carries 53 bits (unit roundoff 1.1e-16). Eager and SDPA sum the same products in
# another order (softmax, then scores x values): each dot product of n terms may differ
# by ~n x 1.1e-16 relative; the tiny model's longest sums are a few hundred terms (width
# 64, ~80 positions, FFN 256) through 2 layers per tower and the backward, so ~1e-12 of
# a value's scale. 1e-9 relative (atol 1e-12 for gradients that are ~0) leaves three
# orders of magnitude and still catches any real difference (a mask or scale error
# changes results at 1e-2).
RTOL, ATOL = 1e-9, 1e-12


def attention_of(policy) -> set[str]:
    kosmos = policy.kosmos
    return {
        kosmos.config._attn_implementation,
        kosmos.text_model.config._attn_implementation,
        kosmos.vision_model.config._attn_implementation,
    }


def features_and_grads(policy, batch, weights):
    """The backbone's per-frame features (both towers' attention in play) and the
    gradients of a fixed projection of them (the text tower's LoRA, the action token).
    The head is left out: it runs in float32 whatever the backbone's dtype."""
    policy.zero_grad(set_to_none=True)
    image_embeds = policy.encode_images(batch["pixels"])
    features = policy.text_features(image_embeds, batch["input_ids"], batch["attention_mask"])
    (features * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return features.detach(), grads


def test_the_backbone_is_built_and_loaded_with_sdpa(demo_data, tmp_path):
    torch.manual_seed(0)
    policy, tokenizer = build_policy(ModelConfig(), demo_data.instructions)
    assert attention_of(policy) == {"sdpa"}
    save_backbone(policy, tokenizer, tmp_path / "kosmos")
    loaded, _ = build_policy(ModelConfig(model=str(tmp_path / "kosmos")))
    assert attention_of(loaded) == {"sdpa"}


def test_sdpa_trains_what_eager_attention_trains(demo_data):
    torch.manual_seed(0)
    sdpa, tokenizer = build_policy(ModelConfig(), demo_data.instructions)
    with torch.no_grad():  # LoRA's B starts at 0: move it so every gradient is non-trivial
        for name, param in sdpa.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    eager = copy.deepcopy(sdpa)
    eager.kosmos.set_attn_implementation("eager")
    assert attention_of(eager) == {"eager"}
    sdpa.double()
    eager.double()

    # Windows of two episodes with padding in play: instructions of different lengths.
    episodes = np.unique(demo_data.train.episode)[:2]
    indices = np.flatnonzero(np.isin(demo_data.train.episode, episodes))
    batch = FrameBatches(demo_data, tokenizer, torch.device("cpu"), dedup=True)(
        demo_data.train, indices
    )
    weights = torch.randn(
        len(batch["input_ids"]),
        eager.kosmos.config.text_config.embed_dim,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    # Kosmos-2 builds its causal mask with torch.full at the default dtype and float64's
    # minimum, which overflows float32: the default dtype follows the model's.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        features_ref, grads_ref = features_and_grads(eager, batch, weights)
        features, grads = features_and_grads(sdpa, batch, weights)
    finally:
        torch.set_default_dtype(default)
    assert features.dtype == torch.float64
    torch.testing.assert_close(features, features_ref, rtol=RTOL, atol=ATOL)
    assert grads.keys() == grads_ref.keys() and any("lora_A" in n for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], rtol=RTOL, atol=ATOL, msg=name)
