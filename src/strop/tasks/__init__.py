"""Tasks: what the examples are, how they are batched, and how predictions are scored."""

from strop.tasks.base import TASKS, Examples, Task
from strop.tasks import classification, multilabel, regression, token_classification  # noqa: F401  (registers them)
from strop.tasks import image_classification  # noqa: F401  (registers it; needs timm only to build a model)
from strop.tasks import reconstruction  # noqa: F401  (registers it: the vector autoencoder of strop pretrain)

# Files whose format says the task: token-per-line CoNLL files are token classification.
CONLL_SUFFIXES = (".conll", ".conllu", ".iob", ".bio", ".bioes")


def infer_task_name(setting: str, train_file: str | None) -> str:
    """task.name made concrete: `auto` is token_classification for a CoNLL file, image_classification for a
    folder (of class folders), else text_classification."""
    if setting != "auto":
        return setting
    from pathlib import Path

    if train_file is not None and Path(train_file).is_dir():
        return "image_classification"
    if train_file is not None and Path(train_file).suffix.lower() in CONLL_SUFFIXES:
        return "token_classification"
    return "text_classification"


__all__ = ["TASKS", "Examples", "Task", "infer_task_name"]
