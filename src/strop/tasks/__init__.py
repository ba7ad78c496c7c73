"""Tasks: what the examples are, how they are batched, and how predictions are scored."""

from strop.tasks.base import TASKS, Examples, Task
from strop.tasks import classification, multilabel, regression, token_classification  # noqa: F401  (registers them)
from strop.tasks import image_classification  # noqa: F401  (registers it; needs timm only to build a model)
from strop.tasks import reconstruction  # noqa: F401  (registers it: the vector autoencoder of strop pretrain)

# Files whose format says the task: token-per-line CoNLL files are token classification.
CONLL_SUFFIXES = (".conll", ".conllu", ".iob", ".bio", ".bioes")


def infer_task_name(setting: str, train_file: str | None, data_cfg=None) -> str:
    """task.name made concrete: `auto` is token_classification for a CoNLL file or a JSONL file of tagged tokens
    (its first object holds lists under the keys token classification reads: `tokens` and `tags`, or
    data.text_column and data.label_column of `data_cfg` where set), image_classification for a folder (of class
    folders), else text_classification.

    Raises:
        StropError: train_file is a folder of data files (a table's folder given for the table).
    """
    if setting != "auto":
        return setting
    from pathlib import Path

    if train_file is not None and Path(train_file).is_dir():
        from strop.data.images import refuse_folder_of_data_files

        refuse_folder_of_data_files(Path(train_file), "data.train")
        return "image_classification"
    if train_file is not None and Path(train_file).suffix.lower() in CONLL_SUFFIXES:
        return "token_classification"
    keys = ("tokens", "tags") if data_cfg is None else token_classification.jsonl_keys(data_cfg)
    if train_file is not None and Path(train_file).suffix.lower() == ".jsonl" and _tagged_tokens(Path(train_file), keys):
        return "token_classification"
    return "text_classification"


def _tagged_tokens(path, keys: tuple[str, str]) -> bool:
    """Whether the first object of a JSONL file holds lists under both `keys` (tokens and tags, as
    token_classification reads them). An unreadable file is not: the reader then says what is wrong with it."""
    import json

    try:
        with path.open(encoding="utf-8-sig") as lines:
            first = next((line for line in lines if line.strip()), "")
        row = json.loads(first)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(row, dict) and all(isinstance(row.get(key), list) for key in keys)


__all__ = ["TASKS", "Examples", "Task", "infer_task_name"]
