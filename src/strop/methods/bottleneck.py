"""Bottleneck adapters: a small down-projection, nonlinearity and up-projection added to the output of chosen
layers of every transformer block, the pretrained weights frozen (peft has none of these).

- `houlsby`: after the attention block's output projection and after the feed-forward block's (Houlsby et al.
  2019, "Parameter-Efficient Transfer Learning for NLP").
- `pfeiffer`: after the feed-forward block's output projection only (Pfeiffer et al. 2021, "AdapterFusion").

Each adapter adds up(act(down(h))) to the projection's output h, before the block's dropout, residual and
layer norm; `up` starts at zero, so training starts from the pretrained function. method.rank is the
bottleneck width. The places are known per architecture (BERT family, DistilBERT); method.target_modules
names others, relative to a block (e.g. [attention.output.dense, output.dense]).

The run saves the whole model (the base with its adapters) as a strop model folder; loading it puts the
adapters back, where and as wide as the saved tensors say, before the weights are read (`restore`).
"""

from __future__ import annotations

import torch
from torch import nn

from strop.errors import StropError
from strop.methods.base import METHODS, Method, freeze_bottom

# model_type -> (attention output projection, feed-forward output projection), relative to a block
PLACES = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "camembert", "electra", "deberta-v2", "mpnet"),
                    ("attention.output.dense", "output.dense")),
    "distilbert": ("attention.out_lin", "ffn.lin2"),
}


class Bottleneck(nn.Module):
    """h -> h + up(act(down(h))): (batch, seq, hidden) -> (batch, seq, hidden)."""

    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.down, self.act, self.up = nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, hidden)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # the identity at the start
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


class Adapted(nn.Module):
    """A frozen linear layer followed by its bottleneck adapter."""

    def __init__(self, base: nn.Linear, width: int):
        super().__init__()
        self.base, self.adapter = base, Bottleneck(base.out_features, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


class BottleneckMethod(Method):
    settings = ("freeze_layers", "rank", "target_modules")

    trains_body = False  # with optim.lr=auto the adapters and the head train at 1e-3, as the peft methods
    placement: tuple[int, ...] = ()  # which of PLACES' entries: 0 attention, 1 feed-forward

    def targets(self, model_type: str) -> tuple[str, ...]:
        if self.cfg.target_modules:
            return tuple(self.cfg.target_modules)
        if model_type not in PLACES:
            raise StropError(f"method.name={self.cfg.name}: strop does not know where the blocks of {model_type} "
                             "models end; name the output projections inside a block, e.g. "
                             "method.target_modules=[attention.output.dense,output.dense]")
        return tuple(PLACES[model_type][i] for i in self.placement)

    def prepare(self, model: nn.Module) -> None:
        body = model.body
        if getattr(body, "kind", None) != "text" or not hasattr(body, "model"):
            raise StropError(f"method.name={self.cfg.name} adapts transformers text models; this backbone is "
                             f"{type(body).__name__}: use method.name=full or freeze")
        insert(body, self.targets(body.model.config.model_type), self.cfg.rank, self.cfg.name)
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head.") or ".adapter." in name)
        freeze_bottom(model, self.cfg.freeze_layers)  # their adapters too


def insert(body: nn.Module, targets: tuple[str, ...], width: int, method: str) -> None:
    """Puts an adapter after each target of every block (once: a target already adapted is left as it is).

    Raises:
        StropError: a target is not a linear layer of the blocks.
    """
    for block in body.layers()[1:]:  # the transformer blocks (layer 0 is the embeddings)
        for target in targets:
            parent_name, _, child = target.rpartition(".")
            try:
                parent = block.get_submodule(parent_name) if parent_name else block
                layer = getattr(parent, child)
            except AttributeError:
                layer = None
            if isinstance(layer, Adapted):
                continue
            if not isinstance(layer, nn.Linear):
                linear = sorted(n for n, m in block.named_modules() if isinstance(m, nn.Linear))
                raise StropError(f"method.name={method}: '{target}' is not a linear layer of the model's blocks; "
                                 f"its linear layers are {', '.join(linear)}")
            setattr(parent, child, Adapted(layer, width))


def restore(model: nn.Module, folder, info: dict) -> None:
    """Before a saved run's weights load: its adapters, where its method was a bottleneck method. Their places
    and width are read from the saved tensors' names and shapes (those of the first block)."""
    method = METHODS.get(info.get("method", "full"))
    if not issubclass(method, BottleneckMethod):
        return
    from safetensors import safe_open

    from strop.config import MethodConfig

    body = model.body
    names = {id(m): n for n, m in body.model.named_modules()}
    first = f"{body.prefix}.{names[id(body.layers()[1])]}."
    suffix = ".adapter.down.weight"
    with safe_open(str(folder / "model.safetensors"), "pt") as saved:
        found = {k[len(first):-len(suffix)]: saved.get_slice(k).get_shape()[0] for k in saved.keys()
                 if k.startswith(first) and k.endswith(suffix)}
    if not found:
        raise StropError(f"{folder}: a {info['method']} run without adapter weights: the folder is damaged")
    cfg = MethodConfig(name=info["method"], rank=next(iter(found.values())), target_modules=tuple(sorted(found)))
    method(cfg).prepare(model)


@METHODS.register("houlsby")
class Houlsby(BottleneckMethod):
    placement = (0, 1)


@METHODS.register("pfeiffer")
class Pfeiffer(BottleneckMethod):
    placement = (1,)
