"""Bad input for each task's reader: one clear message, exit code 2, and no run directory."""

import subprocess
import sys

import pytest


CONLL_OK = "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\n\nPeter NNP I-NP I-PER\n"

CASES = {
    "conll with a line of the wrong width": (
        "train.conll", CONLL_OK + "Blackburn NNP I-PER\n", [],
        ["line 5 of train.conll has 3 columns where the file's first line has 4", "blank lines between sentences"]),
    "conll with an unknown tag scheme": (
        "train.conll", "EU NNP I-NP ORG\nrejects VBZ I-VP O\n", [],
        ["tag 'ORG'", "not in a known tagging scheme", "data.tag_column"]),
    "conll without any entity": (
        "train.conll", "EU NNP I-NP O\nrejects VBZ I-VP O\n", [], ["no entities to learn"]),
    "jsonl tokens and tags of different lengths": (
        "train.jsonl", '{"tokens": ["a", "b"], "tags": ["O", "B-X"]}\n{"tokens": ["a"], "tags": ["O", "O"]}\n',
        ["task.name=token_classification"], ["line 2 of train.jsonl has 1 tokens but 2 tags"]),
    "a regression target that is not a number": (
        "train.csv", "text,label\ngood,1.5\nbad,oops\nfine,2\n", ["task.name=regression"],
        ["regression target column 'label'", "holds 'oops' in row 2", "not a finite number"]),
    "an empty label set in multi-label": (
        "train.csv", "text,label\ngood,a|b\nbad,|\nfine,b\n", ["task.name=multilabel_classification"],
        ["1 empty or missing label set (labels separated by '|') in train.csv, rows 2"]),
    "a vector column with text in it": (
        "train.csv", "x1,x2,label\n1,2,a\n3,four,b\n5,6,a\n7,8,b\n", ["model.name=mlp"],
        ["feature column 'x2'", "holds 'four' in row 2"]),
    "a pair column for a token task": (
        "train.conll", CONLL_OK, ["data.text_pair_column=text_pair"],
        ["data.text_pair_column=text_pair: task.name=token_classification reads words, a tag each", "leave"]),
    "a pair column for vectors": (
        "train.csv", "x1,x2,label\n1,2,a\n3,4,b\n5,6,a\n7,8,b\n", ["model.name=mlp", "data.text_pair_column=x2"],
        ["data.text_pair_column=x2: task.name=text_classification reads vector inputs, not pairs of texts"]),
    "a regression target named twice": (
        "train.csv", "text,t1\ngood,1.5\nbad,2\nfine,2.5\n", ["task.name=regression", "data.label_column=t1,t1"],
        ["data.label_column names t1 twice: name each target column once"]),
    "a token task on vectors": (
        "train.conll", CONLL_OK, ["model.name=mlp"], ["task.name=token_classification needs a model that reads text inputs"]),
    "a metric the task does not compute": (
        "train.csv", "text,label\ngood,1.5\nbad,2\nfine,2\n", ["task.name=regression", "train.metric=accuracy"],
        ["train.metric=accuracy is not a metric of regression", "rmse"]),
    "the text column named as the label column": (
        "train.csv", "text,label\ngood,a\nbad,b\n", ["data.text_column=label"],
        ["data.text_column=label is also the label column", "the model would read the answer"]),
    "a pair whose second text is its first": (
        "train.csv", "text,label\ngood,a\nbad,b\n", ["data.text_pair_column=text"],
        ["data.text_pair_column=text is data.text_column too"]),
    "pairs without the pair column": (
        "train.csv", "text,label\ngood,a\nbad,b\n", ["task.name=pair_classification"],
        ["column 'text_pair' not found", "data.text_pair_column"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_message_exit_2_and_no_run(case, tiny_model_dir, tmp_path):
    name, content, overrides, words = CASES[case]
    (tmp_path / name).write_text(content)
    run = tmp_path / "run"
    model = [] if any(o.startswith("model.name") for o in overrides) else [f"model.name={tiny_model_dir}"]
    result = subprocess.run([sys.executable, "-m", "strop.cli", "fit", f"data.train={tmp_path / name}",
                             f"output_dir={run}", *model, *overrides], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr
    assert not run.exists()
