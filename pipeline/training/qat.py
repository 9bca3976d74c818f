"""Quantization-aware training: the student fine-tuned with the distillation loss while its
convolutions, linears and activations are fake-quantized with the INT8 scheme (PT2E).

The fine-tuned weights (BatchNorm statistics included) are copied back into the student's
own module, so the stage cache stores a plain safetensors checkpoint. The fake-quantize
state (the activation ranges QAT tracked) is returned too: the TFLite backend, whose INT8
scheme QAT trained with, restores it; ONNX and Core ML quantize the QAT-adapted weights with
their own schemes, calibrated on the same sample.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import torch
from torch import nn

from edgekiln.data.dataset import Dataset
from edgekiln.targets.int8 import Int8Options
from edgekiln.training import distillation, modeling, trainer
from edgekiln.training.config import DistillConfig, TrainConfig
from edgekiln.training.schedule import Schedule


class _Prepared(nn.Module):
    """A prepared (fake-quantized) exported graph that `trainer.fit` can drive: exported
    graphs switch train/eval through torchao's helpers, not nn.Module.train()."""

    def __init__(self, graph: torch.fx.GraphModule, source: tuple):
        super().__init__()
        self.graph = graph
        self.source = source  # (float model, example input, Int8Options, scheme module name) it was prepared from

    def __reduce__(self):
        # An exported graph does not pickle. A follower rank (training/distributed.py) prepares
        # the same graph from the same float model, then takes this one's state.
        model, example, options, scheme = self.source
        return (_rebuild, (model, example, options, scheme, self.graph.state_dict(), self.training))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def train(self, mode: bool = True) -> "_Prepared":
        importlib.import_module(self.source[3]).train_mode(self.graph, mode)
        self.training = mode
        return self


def _rebuild(model: nn.Module, example: torch.Tensor, options: Int8Options, scheme: str, state: dict,
             mode: bool) -> _Prepared:
    prepared = importlib.import_module(scheme).prepare_qat(model, example, options)
    prepared.load_state_dict(state)
    return _Prepared(prepared, (model, example, options, scheme)).train(mode)


def finetune(bundle: modeling.ModelBundle, data: Dataset, teachers: list[modeling.ModelBundle], *,
             epochs: int | Schedule, lr: float, options: Int8Options, train: TrainConfig,
             kd: DistillConfig, example: np.ndarray, scheme,
             within_budget=None) -> tuple[torch.fx.GraphModule, dict, dict]:
    """Fine-tune `bundle.model` in place under fake quantization, distilling from `teachers`;
    returns the INT8-simulated (converted) QAT graph, which scores what QAT reached, its
    fake-quantize state (see the scheme's restore_qat), and the record of its schedule (an auto
    schedule scores the fake-quantized model on val after every epoch). `scheme`: the INT8
    simulation (targets/int8.py's Int8Simulation) whose fake quantization it trains under."""

    model = bundle.model
    first = torch.from_numpy(example[:1])
    prepared = scheme.prepare_qat(model, first, options)
    wrapper = _Prepared(prepared, (model, first, options, scheme.__name__))
    # An exponential moving average would also average the observers' ranges: QAT trains without.
    recipe = train.model_copy(update={"ema_decay": None})
    fitted = trainer.fit(dataclasses.replace(bundle, model=wrapper), data, epochs, lr=lr, seed=data.seed,
                          desc=f"QAT {bundle.arch}", train=recipe, teacher=distillation.Teacher(teachers), kd=kd,
                          lr_key="quantize.lr", resumable=False,  # its fake-quantize graph is rebuilt each run
                          within_budget=within_budget)
    if wrapper.training:  # fit leaves the model in eval mode, unless there was nothing to train
        wrapper.train(False)
    trained = prepared.state_dict()
    own = model.state_dict()
    missing = [k for k in own if k not in trained]
    if missing:  # torch.export renamed a parameter: never silently keep the pre-QAT weights
        raise RuntimeError(f"QAT graph lost the student's tensors {missing[:3]}")
    model.load_state_dict({k: trained[k] for k in own})
    model.eval()
    state = scheme.qat_state(prepared, model)  # before converting, which replaces the fake-quantize modules
    return scheme.convert(prepared), state, fitted["schedule"]
