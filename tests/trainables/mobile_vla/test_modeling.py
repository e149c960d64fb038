"""The Mobile VLA policy on the tiny Kosmos-2: shapes, what trains, saving, padding, loss."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from tests.exactness import assert_reordered_close, chain_terms
from tests.trainables.mobile_vla.test_trainable import POLICY_CHAIN
from trainables.mobile_vla.action_loss import action_loss
from trainables.mobile_vla.backbone import (
    cast_frozen,
    load_backbone,
    lora_module_names,
    save_backbone,
)
from trainables.mobile_vla.checkpoint import ADAPTER_DIR, HEAD_FILE, load_trainable, save_trainable
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.modeling_mobile_vla import (
    IMAGE_SIDE,
    MobileVLAPolicy,
    build_policy,
    parameter_counts,
)
from trainables.mobile_vla.tokenizer import encode_instructions, train_instruction_tokenizer

INSTRUCTIONS = [
    "go forward",
    "go to the red box and stop on its left side",
    "turn left at the chair",
]
SIZE = ModelConfig().tiny_image_size


@pytest.fixture(autouse=True)
def offline_caches(tmp_path, monkeypatch):
    """Nothing here may reach the hub or write outside tmp_path."""
    for var in ("HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def make_policy(seed: int = 0, **overrides) -> tuple[MobileVLAPolicy, object]:
    torch.manual_seed(seed)
    return build_policy(ModelConfig(**overrides), INSTRUCTIONS)


def frames(batch: int, window: int = 8, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, window, SIZE, SIZE, 3), dtype=torch.uint8, generator=gen)


def perturb_trainables(policy: MobileVLAPolicy) -> None:
    """LoRA B starts at zero (an adapter is a no-op at init); make the saved state count."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in policy.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=gen))


# ---------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize(
    "key, value",
    [
        ("lora_target", "vision"),
        ("loss", "l1"),
        ("lora_r", 0),
        ("lora_dropout", 1.0),
        ("huber_delta", 0.0),
        ("window_size", 0),
        ("freeze_backbone", "yes"),
        ("tiny_heads", 5),
        ("tiny_patch_size", 15),
    ],
)
def test_config_rejects_bad_values_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        ModelConfig(**{key: value})


def test_config_from_flat_dict_skips_other_keys():
    cfg = ModelConfig.from_dict({"lora_r": 8, "learning_rate": 1e-4})
    assert cfg.lora_r == 8 and cfg.image_size() == (SIZE, SIZE)
    with pytest.raises(ValueError, match="learning_rate"):
        ModelConfig.from_dict({"learning_rate": 1e-4}, ignore_unknown=False)


def test_missing_model_directory_is_named():
    with pytest.raises(ValueError, match="model"):
        build_policy(ModelConfig(model="/no/such/kosmos-2"))


# ---------------------------------------------------------------------------------------
# forward


def test_output_shapes_and_range():
    policy, tok = make_policy()
    ids, mask = encode_instructions(tok, INSTRUCTIONS)
    out = policy(frames(3), ids, mask)
    assert out.shape == (3, 8, 10, 2) and out.dtype == torch.float32
    assert out.abs().max() <= 1
    assert policy.num_image_tokens == ModelConfig().tiny_latent_query_num


def test_rejects_float_or_wrong_size_pixels():
    policy, tok = make_policy()
    ids, mask = encode_instructions(tok, INSTRUCTIONS[:1])
    with pytest.raises(ValueError, match="uint8"):
        policy(frames(1).float(), ids, mask)
    with pytest.raises(ValueError, match="vision tower"):
        policy(frames(1)[:, :, :28, :28], ids, mask)


def test_action_token_follows_each_rows_last_real_token():
    policy, tok = make_policy()
    ids, mask = encode_instructions(tok, INSTRUCTIONS)
    _, seq_mask, image_positions, action_positions = policy.build_sequences(ids, mask)
    n_img = policy.num_image_tokens
    assert action_positions.tolist() == (n_img + mask.sum(1)).tolist()
    assert image_positions[:, 1 : 1 + n_img].all() and image_positions.sum() == 3 * n_img
    # everything up to and including the action token is attended, nothing after it
    for row, pos in enumerate(action_positions.tolist()):
        assert seq_mask[row, : pos + 1].all() and not seq_mask[row, pos + 1 :].any()


FORWARD_TERMS = chain_terms(0, POLICY_CHAIN // 2)  # the forward half of the chain


def test_row_output_does_not_depend_on_batch_padding():
    policy, tok = make_policy()
    policy.eval()
    pixels = frames(3)
    short = encode_instructions(tok, INSTRUCTIONS[:1])
    alone = policy(pixels[:1], *short)
    ids, mask = encode_instructions(tok, INSTRUCTIONS)  # row 0 padded to the longest
    assert mask[0].sum() < mask[1].sum()
    batched = policy(pixels, ids, mask)
    # The same sums over more (padded, zero-weighted) positions: a reordering of the
    # policy's forward chain (tests.exactness).
    assert_reordered_close(batched[:1], alone, FORWARD_TERMS, "row 0, batched")
    # left padding and garbage in padded slots give the same answer
    left_ids, left_mask = torch.full_like(ids, 99), torch.zeros_like(mask)
    for row in range(3):
        n = int(mask[row].sum())
        left_ids[row, ids.shape[1] - n :] = ids[row, :n]
        left_mask[row, ids.shape[1] - n :] = 1
    left = policy(pixels, left_ids, left_mask)
    assert_reordered_close(left, batched, FORWARD_TERMS, "left padding")


def test_instruction_changes_the_prediction():
    policy, tok = make_policy()
    perturb_trainables(policy)
    policy.eval()
    pixels = frames(1).expand(2, -1, -1, -1, -1)
    out = policy(pixels, *encode_instructions(tok, INSTRUCTIONS[:2]))
    assert not torch.allclose(out[0], out[1])


def test_bf16_autocast_on_cpu():
    policy, tok = make_policy()
    ids, mask = encode_instructions(tok, INSTRUCTIONS)
    cast_frozen(policy, torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in policy.parameters() if p.requires_grad)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = policy(frames(3, window=4), ids, mask)
        total, count = action_loss(out, torch.zeros_like(out), torch.ones(out.shape[:-1]))
    total.backward()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert policy.action_token.grad is not None


# ---------------------------------------------------------------------------------------
# what trains


def trainable_names(policy: MobileVLAPolicy) -> list[str]:
    return [n for n, p in policy.named_parameters() if p.requires_grad]


def lora_numel(policy: MobileVLAPolicy) -> int:
    kosmos, r = policy.kosmos, policy.cfg.lora_r
    layers = [kosmos.get_submodule(n).base_layer for n in lora_module_names(policy)]
    return sum(r * (layer.in_features + layer.out_features) for layer in layers)


def test_default_setup_trains_only_lora_action_token_and_head():
    policy, _ = make_policy()
    names = trainable_names(policy)
    assert names and all(
        "lora_" in n or n == "action_token" or n.startswith("head.") for n in names
    )
    head = sum(p.numel() for p in policy.head.parameters()) + policy.hidden_size
    counts = parameter_counts(policy)
    assert counts["lora"] == lora_numel(policy) > 0
    assert counts["head"] == head and counts["backbone"] == 0
    assert counts["trainable"] == counts["lora"] + head
    assert counts["total"] == sum(p.numel() for p in policy.parameters())


def test_text_lora_targets_only_the_text_model():
    names = lora_module_names(make_policy()[0])
    assert len(names) == 2 * 6  # 2 layers x (q, k, v, out, fc1, fc2)
    assert all(n.startswith("text_model.model.layers.") for n in names)
    both = lora_module_names(make_policy(lora_target="text+vision")[0])
    assert any(n.startswith("vision_model.") for n in both)
    assert not any(n.startswith("image_to_text_projection.") for n in both)
    every = lora_module_names(make_policy(lora_target="all_linear")[0])
    assert "image_to_text_projection.x_attn.q_proj" in every and len(every) == 2 * 12 + 5


@pytest.mark.parametrize(
    "overrides, part",
    [
        ({"train_vision": True}, "vision"),
        ({"train_text_embedding": True}, "embedding"),
        ({"freeze_backbone": False}, "rest"),
        ({"lora_enable": False}, None),
    ],
)
def test_train_setup_counts(overrides, part):
    policy, _ = make_policy(**overrides)
    kosmos = policy.kosmos
    vision = sum(p.numel() for n, p in kosmos.vision_model.named_parameters() if "lora_" not in n)
    embedding = kosmos.get_input_embeddings().weight.numel()
    base = sum(p.numel() for n, p in kosmos.named_parameters() if "lora_" not in n)
    expected = {"vision": vision, "embedding": embedding, "rest": base - vision - embedding}
    counts = parameter_counts(policy)
    assert counts["backbone"] == expected.get(part, 0)
    assert counts["lora"] == (lora_numel(policy) if policy.cfg.lora_enable else 0)
    assert counts["head"] == sum(p.numel() for p in policy.head.parameters()) + policy.hidden_size


def test_gradients_reach_lora_action_token_and_head():
    policy, tok = make_policy()
    ids, mask = encode_instructions(tok, INSTRUCTIONS)
    out = policy(frames(3), ids, mask)
    target = torch.rand(out.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    total, count = action_loss(out, target, torch.ones(out.shape[:-1]))
    (total / count).backward()
    for name, param in policy.named_parameters():
        if not param.requires_grad:
            assert param.grad is None, name
        elif "lora_A" in name:
            assert param.grad is not None, name  # exactly 0 at init: B starts at 0
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_init_is_deterministic_given_the_seed():
    first, tok1 = make_policy(seed=5)
    second, tok2 = make_policy(seed=5)
    for (n1, p1), (n2, p2) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert n1 == n2 and torch.equal(p1, p2), n1
    assert tok1.get_vocab() == tok2.get_vocab()


def test_tokenizer_ignores_order_and_duplicates():
    a = train_instruction_tokenizer(INSTRUCTIONS)
    b = train_instruction_tokenizer(INSTRUCTIONS[::-1] + INSTRUCTIONS)
    assert a.get_vocab() == b.get_vocab()
    assert (a.bos_token_id, a.pad_token_id, a.eos_token_id) == (0, 1, 2)
    ids, mask = encode_instructions(a, ["go forward", "go forward now"])
    assert ids[:, 0].tolist() == [0, 0] and mask.sum(1).tolist() == [3, 4]
    assert ids[0, 3] == a.pad_token_id and ids[1, 3] == a.unk_token_id


# ---------------------------------------------------------------------------------------
# saving and loading


def test_tiny_backbone_reloads_through_from_pretrained(tmp_path):
    policy, tok = make_policy(lora_target="text+vision", train_vision=True)
    perturb_trainables(policy)
    policy.eval()
    save_backbone(policy, tok, tmp_path / "backbone")
    save_trainable(policy, tmp_path / "ckpt")

    cfg = ModelConfig(
        model=str(tmp_path / "backbone"), lora_target="text+vision", train_vision=True
    )
    assert cfg.is_local and cfg.image_size() == (SIZE, SIZE)
    torch.manual_seed(123)  # a different init: everything must come from the files
    reloaded, tok2 = build_policy(cfg)
    load_trainable(reloaded, tmp_path / "ckpt")
    reloaded.eval()

    ids, mask = encode_instructions(tok, INSTRUCTIONS)
    ids2, mask2 = encode_instructions(tok2, INSTRUCTIONS)
    assert torch.equal(ids, ids2) and torch.equal(mask, mask2)
    pixels = frames(3)
    assert torch.equal(reloaded(pixels, ids2, mask2), policy(pixels, ids, mask))


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")  # peft 0.21 on transformers 5
def test_adapter_loads_with_peft_onto_a_fresh_base(tmp_path):
    policy, tok = make_policy()
    perturb_trainables(policy)
    policy.eval()
    save_trainable(policy, tmp_path / "ckpt")
    adapter = tmp_path / "ckpt" / ADAPTER_DIR
    assert (adapter / "adapter_config.json").exists()
    assert (adapter / "adapter_model.safetensors").exists()
    target = json.loads((adapter / "adapter_config.json").read_text())["target_modules"]
    assert target.startswith("text_model")

    torch.manual_seed(0)  # the tiny base is a function of the seed
    base, _ = load_backbone(ModelConfig(), INSTRUCTIONS)
    peft_model = PeftModel.from_pretrained(base, adapter)
    fresh = MobileVLAPolicy(ModelConfig(), peft_model)
    result = fresh.load_state_dict(load_file(tmp_path / "ckpt" / HEAD_FILE), strict=False)
    assert not result.unexpected_keys
    fresh.eval()

    ids, mask = encode_instructions(tok, INSTRUCTIONS)
    pixels = frames(3)
    assert torch.equal(fresh(pixels, ids, mask), policy(pixels, ids, mask))


def test_checkpoint_is_small_and_refuses_another_setup(tmp_path):
    policy, _ = make_policy()
    save_trainable(policy, tmp_path / "ckpt")
    head = load_file(tmp_path / "ckpt" / HEAD_FILE)
    assert set(head) == {"action_token"} | {f"head.{n}" for n, _ in policy.head.named_parameters()}
    other, _ = make_policy(train_vision=True)
    with pytest.raises(ValueError, match="train setup"):
        load_trainable(other, tmp_path / "ckpt")
    bigger, _ = make_policy(lora_r=4)
    with pytest.raises(ValueError, match="r="):
        load_trainable(bigger, tmp_path / "ckpt")


# ---------------------------------------------------------------------------------------
# loss


def test_action_loss_sums_and_counts_real_targets_only():
    pred = torch.tensor([[[[0.5, -1.0], [0.0, 0.0]], [[2.0, 0.0], [9.0, 9.0]]]])  # (1,2,2,2)
    target = torch.zeros_like(pred)
    mask = torch.tensor([[[True, True], [True, False]]])  # last chunk entry is padding
    total, count = action_loss(pred, target, mask, "mse")
    assert count.item() == 6
    assert total.item() == pytest.approx(0.25 + 1.0 + 4.0)
    total, count = action_loss(pred, target, mask, "huber", delta=1.0)
    # 0.5*0.5^2 + (1*(1-0.5)) + 0 + 0 + 1*(2-0.5) + 0
    assert total.item() == pytest.approx(0.125 + 0.5 + 1.5) and count.item() == 6
    total, _ = action_loss(pred, target, mask, "huber", delta=2.0)
    assert total.item() == pytest.approx(0.125 + 0.5 + 2.0)
    # NaN in a padded target does not leak
    target[0, 1, 1] = float("nan")
    assert torch.isfinite(action_loss(pred, target, mask)[0])
    with pytest.raises(ValueError, match="loss"):
        action_loss(pred, target, mask, "l1")


def test_head_width_is_head_hidden_else_the_backbone_width_capped():
    assert ModelConfig().head_width(64) == 64
    assert ModelConfig().head_width(2048) == 1024
    assert ModelConfig(head_hidden=32).head_width(2048) == 32
    policy, _ = build_policy(ModelConfig(), ["go"])
    assert policy.head.lstm.hidden_size == ModelConfig().head_width(policy.hidden_size)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"train_vision": True}, {"lora_target": "text+vision"}, {"freeze_backbone": False}],
)
def test_image_side_trains_says_whether_the_built_model_trains_its_image_side(overrides):
    cfg = ModelConfig(**overrides)
    policy, _ = build_policy(cfg, INSTRUCTIONS)
    trained = [
        name
        for name, param in policy.kosmos.named_parameters()
        if param.requires_grad and name.startswith(IMAGE_SIDE)
    ]
    assert bool(cfg.image_side_trains()) == bool(trained), (cfg.image_side_trains(), trained)


def test_a_model_folder_under_home_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    policy, tok = make_policy()
    save_backbone(policy, tok, tmp_path / "kosmos")
    cfg = ModelConfig(model="~/kosmos")
    assert cfg.is_local and cfg.image_size() == (SIZE, SIZE)
    reloaded, _ = build_policy(cfg)
    assert reloaded.hidden_size == policy.hidden_size
    with pytest.raises(ValueError, match="model: ~/elsewhere is not a folder on this machine"):
        ModelConfig(model="~/elsewhere").image_size()
