"""`sparse`: full fine-tuning that keeps the body's zero weights at zero, the recovery fine-tune after magnitude
pruning (`strop prune`; Han et al. 2015, "Learning both Weights and Connections"). The mask is the set of
weights of the body's linear layers that are exactly zero when training starts; their gradients are masked, so
neither the gradient step nor AdamW's decoupled weight decay moves them."""

from __future__ import annotations

from torch import nn

from strop.methods.base import METHODS, Method


@METHODS.register("sparse")
class Sparse(Method):
    def prepare(self, model: nn.Module) -> None:
        super().prepare(model)
        for module in model.body.modules():
            # frozen weights (method.freeze_layers) cannot move: they need no mask
            if (isinstance(module, nn.Linear) and module.weight.requires_grad
                    and not getattr(module.weight, "_strop_sparse", False)):
                mask = (module.weight.detach() != 0).to(module.weight.dtype)  # (out, in)
                if not bool((mask == 0).any()):
                    continue
                module.weight.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device))
                module.weight._strop_sparse = True  # prepare may run twice (lr-find, then the run)
