"""A trial's configuration as a RoboVLMs-style config JSON (train_setup block and all),
so the best configuration of a sweep drops into the reference team's training code."""

from __future__ import annotations

from typing import Any

from trainables.mobile_vla.trial_config import parse_config


def to_robovlms(flat: dict[str, Any]) -> dict[str, Any]:
    cfg = parse_config(flat)
    model, train, data = cfg.model, cfg.train, cfg.data
    height, width = data.image_size
    precision = {"fp32": "32", "bf16": "bf16", "fp16": "16", "auto": "bf16"}[train.precision]
    return {
        "robovlm_name": "RoboKosMos",
        "model": "kosmos",
        "model_path": model.model,
        "image_size": height if height == width else [height, width],
        "window_size": data.window_size,
        "fwd_pred_next_n": data.fwd_pred_next_n,
        "learning_rate": train.learning_rate,
        "min_lr_scale": train.min_lr_scale,
        "weight_decay": train.weight_decay,
        "warmup_epochs": train.warmup_ratio,
        "lr_schedule": train.lr_schedule,
        "batch_size": train.batch_size,
        "seed": train.seed,
        "trainer": {
            "precision": precision,
            "gradient_clip_val": train.grad_clip,
            "max_epochs": train.max_epochs,
            "accumulate_grad_batches": None,  # derived from batch_size and the micro-batch
        },
        "train_setup": {
            "precision": precision,
            "predict_action": True,
            "predict_forward": False,
            "train_vision": model.train_vision,
            "freeze_backbone": model.freeze_backbone,
            "train_text_embedding": model.train_text_embedding,
            "lora_enable": model.lora_enable,
            "lora_r": model.lora_r,
            "lora_alpha": model.lora_alpha,
            "lora_dropout": model.lora_dropout,
            "lora_bias": "none",
            "lora_target": model.lora_target,
        },
        "act_head": {
            "type": "LSTMDecoder",
            "hidden_size": model.head_hidden,
            "num_layers": model.head_layers,
            "action_dim": model.action_dim,
            "action_names": list(data.action_dims),
            "action_bound": data.action_bound,
            "fwd_pred_next_n": data.fwd_pred_next_n,
            "window_size": data.window_size,
            "action_space": "continuous",
            "loss": model.loss,
        },
        "vlm": {
            "type": "Kosmos2ForConditionalGeneration",
            "pretrained_model_name_or_path": model.model,
            "name": "kosmos",
        },
        "train_dataset": {
            "type": "MobileVLAH5Dataset",
            "data_dir": data.data_dir,
            "pattern": data.pattern,
            "val_ratio": data.val_ratio,
            "split_seed": data.split_seed,
        },
    }
