"""Parameter-efficient methods through peft: the pretrained body stays frozen, a few new weights that peft
adds to it train, and the task head trains in full.

- `lora`: low-rank updates of chosen linear layers (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large
  Language Models"); method.rank, method.alpha, method.dropout, method.target_modules. Text models and timm
  image models (see image_targets); the other methods are for text.
- `ia3`: learned scalings of keys, values and feed-forward activations (Liu et al. 2022, "Few-Shot
  Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning"); method.target_modules.
- `prompt_tuning`: method.virtual_tokens learned input embeddings put before the text (Lester et al. 2021,
  "The Power of Scale for Parameter-Efficient Prompt Tuning"), initialised from the vocabulary's embeddings.
- `prefix_tuning`: learned keys and values at every layer (Li & Liang 2021, "Prefix-Tuning"; Liu et al.
  2022, "P-Tuning v2" for encoders).

Where method.target_modules is empty, peft's defaults for the architecture apply (its table by model type:
BERT and RoBERTa `query`, `value` for LoRA; `key`, `value`, `output.dense` for IA3). Prompt tuning drops the
token type ids (peft does, for prompt learning on encoders): text pairs lose their segment embedding.

The body is wrapped in peft's own model (`PeftModelForFeatureExtraction`), so the run's model folder holds
the adapter in peft's layout (see strop.adapters), loadable with plain `PeftModel.from_pretrained`.
"""

from __future__ import annotations

import warnings

from torch import nn

from strop.errors import StropError
from strop.methods.base import METHODS, Method, freeze_bottom

ADAPTER = "default"  # peft's adapter name; peft puts it in the name of every weight it adds


class PeftMethod(Method):
    """Wraps the text backbone's encoder in peft (once: `prepare` may run again on the same model) and trains
    the adapter's weights and the task head."""

    # The body's pretrained weights stay frozen: with optim.lr=auto the adapters and the head train at the
    # rate of a head on a frozen body (optim.head_lr_scale times the fine-tuning rate: 1e-3 by default).
    trains_body = False
    body_kinds = ("text",)  # the backbones (Backbone.kind) the method adapts

    def peft_config(self, encoder: nn.Module, kind: str):
        """peft's config for the body's network `encoder` (a transformers model, or a timm one for "image")."""
        raise NotImplementedError

    def prepare(self, model: nn.Module) -> None:
        body = model.body
        if adapter_of(body) is None:
            kind = getattr(body, "kind", None)
            if kind not in self.body_kinds or not hasattr(body, "model"):
                what = " and ".join({"text": "transformers text models", "image": "timm image models"}[k]
                                    for k in self.body_kinds)
                raise StropError(f"method.name={self.cfg.name} adapts {what}; this model's backbone is "
                                 f"{type(body).__name__}: use method.name=full or freeze")
            body.model = wrap(body.model, self.peft_config(body.model, kind), self.cfg)
        for name, p in body.named_parameters():
            p.requires_grad_(ADAPTER in name.split("."))
        for p in model.head.parameters():
            p.requires_grad_(True)
        freeze_bottom(model, self.cfg.freeze_layers)  # the adapter's weights in those layers too

    def frozen_split(self, model: nn.Module):
        """The bottom method.freeze_layers layers' outputs may be cached (see Method), except where learned
        tokens enter below every layer (prompt and prefix tuning)."""
        peft_model = adapter_of(model.body)
        if peft_model is not None and peft_model.active_peft_config.is_prompt_learning:
            return None
        return super().frozen_split(model)


def adapter_of(body: nn.Module):
    """The peft model wrapping the body's encoder, or None where the body is not adapted."""
    import sys

    peft = sys.modules.get("peft")  # no body is wrapped before peft was imported: no need to import it here
    encoder = getattr(body, "model", None)
    return encoder if peft is not None and isinstance(encoder, peft.PeftModel) else None


def wrap(encoder: nn.Module, config, cfg) -> nn.Module:
    """`encoder` in peft's model for `config`.

    Raises:
        StropError: peft has no default target modules for this architecture, or a named one is absent.
    """
    from peft import get_peft_model

    quiet_peft()
    try:
        return get_peft_model(encoder, config)
    except ValueError as error:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in encoder.named_modules() if isinstance(m, nn.Linear)})
        raise StropError(f"method.name={cfg.name}: peft cannot adapt {type(encoder).__name__} as configured "
                         f"({str(error).splitlines()[0][:200]}); name the layers to adapt, e.g. "
                         f"method.target_modules=[{', '.join(linear[:4])}] (its linear layers: {', '.join(linear)}) "
                         "or method.target_modules=[all-linear]") from None


def quiet_peft() -> None:
    """Silences notices peft's use of transformers gives on every model: that prompt tuning drops token type ids
    (the module docstring says so), and transformers' deprecation of names peft still uses (prefix tuning passes
    `past_key_values`, which transformers plans to remove from BERT's forward in 5.40)."""
    warnings.filterwarnings("ignore", message="Token type ids are not supported for parameter efficient tuning")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated")
    warnings.filterwarnings("ignore", message=".*past_key_values.* is deprecated")


def _targets(cfg) -> str | list[str] | None:
    """method.target_modules as peft takes it: None for the architecture's defaults."""
    if not cfg.target_modules:
        return None
    if cfg.target_modules == ("all-linear",):
        return "all-linear"
    return list(cfg.target_modules)


def image_targets(network: nn.Module) -> list[str]:
    """LoRA's default layers in a timm network: every linear layer and every convolution that is not grouped
    (peft's low-rank update of a depthwise convolution would not be low-rank per channel), by full name: in a
    convolutional network the stem, the pointwise convolutions and the head's; in a vision transformer the
    patch embedding, attention and MLP layers."""
    return [name for name, module in network.named_modules()
            if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)]


@METHODS.register("lora")
class LoRA(PeftMethod):
    body_kinds = ("text", "image")
    settings = ("freeze_layers", "rank", "alpha", "dropout", "target_modules")

    def peft_config(self, encoder: nn.Module, kind: str):
        from peft import LoraConfig, TaskType

        if kind == "image":  # a plain torch network to peft: no task type, the layers named
            return LoraConfig(r=self.cfg.rank, lora_alpha=self.cfg.alpha, lora_dropout=self.cfg.dropout,
                              target_modules=_targets(self.cfg) or image_targets(encoder))
        return LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=self.cfg.rank, lora_alpha=self.cfg.alpha,
                          lora_dropout=self.cfg.dropout, target_modules=_targets(self.cfg))


@METHODS.register("ia3")
class IA3(PeftMethod):
    settings = ("freeze_layers", "target_modules")

    def peft_config(self, encoder: nn.Module, kind: str):
        from peft import IA3Config, TaskType

        targets = _targets(self.cfg)
        # Named layers are scaled at their output; peft's defaults scale the feed-forward output layer's input.
        return IA3Config(task_type=TaskType.FEATURE_EXTRACTION, target_modules=targets,
                         feedforward_modules=None if targets is None else [])


@METHODS.register("prompt_tuning")
class PromptTuning(PeftMethod):
    settings = ("freeze_layers", "virtual_tokens")

    def peft_config(self, encoder: nn.Module, kind: str):
        from peft import PromptTuningConfig, PromptTuningInit, TaskType

        # Sampled from the vocabulary's embeddings: on the scale of real tokens (a random N(0, 1) start is far
        # larger than BERT's embeddings and trains slowly, Lester et al. 2021).
        return PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=self.cfg.virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)


def leave_room_for_prompt(body, cfg) -> str | None:
    """Prompt tuning puts method.virtual_tokens learned tokens before the text's, and they take positions: a text
    of model.max_length tokens would index past the position embeddings (a crash at predict time on a long text).
    Shortens the body's max_length to leave them room, before any text is encoded; returns the note saying so.

    Raises:
        StropError: the virtual tokens alone fill the model's positions.
    """
    if cfg.method.name != "prompt_tuning" or getattr(body, "kind", None) != "text":
        return None
    from strop.backbones.text import tokens_read

    limit = tokens_read(body.model, body.tokenizer)
    virtual = cfg.method.virtual_tokens
    if limit is None or body.max_length + virtual <= limit:
        return None
    if virtual >= limit - 2:  # room for [CLS], a token of text and [SEP] at least
        raise StropError(f"method.virtual_tokens={virtual}: the model reads at most {limit} tokens, and the prompt "
                         f"would fill them; choose fewer virtual tokens (20 is usual)")
    body.max_length = limit - virtual
    return (f"model.max_length {cfg.model.max_length} -> {body.max_length}: the model reads {limit} positions, "
            f"and the prompt's {virtual} virtual tokens take {virtual} of them")


@METHODS.register("prefix_tuning")
class PrefixTuning(PeftMethod):
    settings = ("freeze_layers", "virtual_tokens")

    def peft_config(self, encoder: nn.Module, kind: str):
        from peft import PrefixTuningConfig, TaskType

        return PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=self.cfg.virtual_tokens)


PEFT_METHODS = ("lora", "ia3", "prompt_tuning", "prefix_tuning")
