"""fp16 that trains, the parts a CPU can check: fp32 master weights whatever the frozen
base's dtype, and the GradScaler unscaling before the gradients are clipped. (fp16 and
bf16 trials on CUDA are the GPU tests' job.)"""

from __future__ import annotations

import pytest
import torch

from trainables.training import TrainConfig, Trainer, plan_batches


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trained = torch.nn.Linear(4, 1)
        self.frozen = torch.nn.Linear(4, 4)


def trainer_for(model: torch.nn.Module, clip: float = 0.0) -> Trainer:
    cfg = TrainConfig(batch_size=16, learning_rate=0.1, grad_clip=clip)
    return Trainer(model, cfg, plan_batches(cfg, 16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_trainables_of_a_low_precision_model_become_fp32_master_weights(dtype):
    model = Model().to(dtype)
    model.frozen.requires_grad_(False)
    trainer = trainer_for(model)
    assert {p.dtype for p in model.trained.parameters()} == {torch.float32}
    assert {p.dtype for p in model.frozen.parameters()} == {dtype}  # frozen: left as loaded
    optimized = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in optimized} == {id(p) for p in model.trained.parameters()}
    assert all(p.dtype == torch.float32 for p in optimized)


def test_the_scaler_unscales_before_clipping():
    """With a loss scale of 2**16, the reported norm and the clipped gradient Adam sees
    are those of the true gradients (Adam's first moment is (1 - beta1) x its input)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 4, generator=gen)
    y = x.sum(dim=1, keepdim=True)
    results = {}
    for scaled in (False, True):
        model = Model()
        model.frozen.requires_grad_(False)
        trainer = trainer_for(model, clip=0.01)
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, enabled=scaled)

        def loss_fn(batch, model=model):
            return ((model.trained(batch[0]) - batch[1]) ** 2).sum(), torch.tensor(16)

        _, norm = trainer.step([(x, y)], loss_fn, lambda b: 16)
        moments = [s["exp_avg"] for s in trainer.optimizer.state.values()]
        applied = torch.linalg.vector_norm(torch.stack([m.norm() for m in moments])) / 0.1
        results[scaled] = (norm, applied.item())
        assert trainer.global_step == 1 and trainer.skipped_steps == 0
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-6) and results[True][0] > 1
    assert results[True][1] == pytest.approx(0.01, rel=1e-4)
