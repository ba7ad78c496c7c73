"""strop distill: the student's initialisation from the teacher's blocks, the loss, and a run end to end."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

import strop
from strop.cli import main
from strop.distill import SoftTargets, distill, shrink
from strop.errors import StropError


@pytest.fixture(scope="module")
def teacher(tiny_model_dir, text_data, tmp_path_factory):
    return strop.fit(None, [f"model.name={tiny_model_dir}", f"data.train={text_data['train']}",
                            f"data.validation={text_data['dev']}", f"output_dir={tmp_path_factory.mktemp('t') / 'run'}",
                            "train.epochs=1", "optim.lr=1e-3", "train.quiet=true", "model.max_length=32",
                            "train.batch_size=16", "train.mixed_precision=no"])


def test_the_student_keeps_the_teachers_top_blocks_embeddings_and_head(teacher):
    model = strop.load(teacher, device="cpu").model
    student = shrink(model, 1)
    assert len(student.body.layers()) == 2 and student.body.model.config.num_hidden_layers == 1
    top, kept = model.body.layers()[2], student.body.layers()[1]
    for (name, a), (_, b) in zip(top.state_dict().items(), kept.state_dict().items()):
        assert torch.equal(a, b), name
    for part in ("head", "body.model.embeddings"):
        for name, value in model.get_submodule(part).state_dict().items():
            assert torch.equal(value, student.get_submodule(part).state_dict()[name])
    assert len(model.body.layers()) == 3  # the teacher is left whole
    with pytest.raises(StropError, match="--layers must be from 1 to 1"):
        shrink(model, 2)


def test_the_loss_mixes_soft_and_hard_targets(teacher):
    predictor = strop.load(teacher, device="cpu")
    student = torch.tensor([[1.0, -1.0], [0.2, 0.3]])
    teacher_logits = torch.tensor([[2.0, 0.0], [-1.0, 1.0]])
    labels = torch.cat([torch.tensor([[0.0], [1.0]]), teacher_logits], dim=1)
    t = 2.0
    soft = F.kl_div(F.log_softmax(student / t, -1), F.softmax(teacher_logits / t, -1), reduction="batchmean") * t * t
    hard = F.cross_entropy(student, torch.tensor([0, 1]))
    for alpha, expected in ((1.0, soft), (0.0, hard), (0.5, 0.5 * soft + 0.5 * hard)):
        task = SoftTargets(predictor.model, t, alpha).wrap(predictor.task)
        assert task.loss(student, labels).item() == pytest.approx(expected.item(), abs=1e-6)
        assert task.targets({"labels": labels}) == [0, 1]
        assert task.name == "text_classification"


def test_distill_writes_a_normal_run_of_the_smaller_student(teacher, tmp_path, capsys):
    output = tmp_path / "student"
    assert main(["distill", str(teacher), f"output_dir={output}", "train.epochs=1", "--layers", "1", "--quiet"]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["task"] == "text_classification" and 0 <= summary["validation"]["accuracy"] <= 1
    assert json.loads((output / "model" / "config.json").read_text())["num_hidden_layers"] == 1
    predictor = strop.load(output)
    assert predictor.labels == ["negative", "positive"]
    assert predictor.predict(["great fun film"])[0] in ("negative", "positive")
    # the model it started from stays with the run, and config.yaml re-runs it (a plain fit from that start)
    start = output / "student_start"
    assert yaml.safe_load((output / "config.yaml").read_text())["model"]["name"] == str(start)
    # every block of the student trains, whatever bottom the teacher kept frozen
    assert yaml.safe_load((teacher / "config.yaml").read_text())["method"]["freeze_layers"] > 0
    assert yaml.safe_load((output / "config.yaml").read_text())["method"]["freeze_layers"] == 0
    trained, started = load_file(output / "model" / "model.safetensors"), load_file(start / "model.safetensors")
    embeddings = next(name for name in started if "word_embeddings" in name)
    assert not torch.equal(trained[embeddings], started[embeddings])
    assert json.loads((start / "config.json").read_text())["num_hidden_layers"] == 1
    again = strop.fit(str(output / "config.yaml"), [f"output_dir={tmp_path / 'again'}", "train.quiet=true"])
    assert (again / "model" / "model.safetensors").is_file()
    with pytest.raises(StropError, match="--alpha"):
        distill(teacher, [f"output_dir={tmp_path / 'x'}"], layers=1, alpha=1.5)
    with pytest.raises(StropError, match="--temperature must be a number > 0"):  # not a loss of nan, blamed on lr
        distill(teacher, [f"output_dir={tmp_path / 'x'}"], layers=1, temperature=float("inf"))
    assert not (tmp_path / "x").exists()
    for method in ("fewshot", "auto"):  # few-shot's pairs read hard labels: it crashed on the soft targets
        with pytest.raises(StropError, match=f"method.name={method}: a student learns the teacher's soft targets"):
            distill(teacher, [f"output_dir={tmp_path / 'x'}", f"method.name={method}"], layers=1)
        assert not (tmp_path / "x").exists()


def test_an_unlabelled_text_adds_only_the_soft_loss(teacher):
    predictor = strop.load(teacher, device="cpu")
    student = torch.tensor([[1.0, -1.0], [0.2, 0.3]])
    teacher_logits = torch.tensor([[2.0, 0.0], [-1.0, 1.0]])
    t, alpha = 2.0, 0.5
    task = SoftTargets(predictor.model, t, alpha).wrap(predictor.task)
    mixed = torch.cat([torch.tensor([[0.0], [-1.0]]), teacher_logits], dim=1)  # the second text has no label
    soft = F.kl_div(F.log_softmax(student / t, -1), F.softmax(teacher_logits / t, -1), reduction="batchmean") * t * t
    hard = F.cross_entropy(student[:1], torch.tensor([0]))
    assert task.loss(student, mixed).item() == pytest.approx((alpha * soft + (1 - alpha) * hard).item(), abs=1e-6)
    unlabelled = torch.cat([torch.tensor([[-1.0], [-1.0]]), teacher_logits], dim=1)
    assert task.loss(student, unlabelled).item() == pytest.approx(soft.item(), abs=1e-6)


def test_distill_trains_on_unlabelled_texts_too(teacher, tmp_path, capsys):
    from conftest import make_texts

    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(text for text, _ in make_texts(40, seed=9)) + "\n")
    run = distill(teacher, [f"output_dir={tmp_path / 'student'}", "train.epochs=1", "train.quiet=true"], layers=1,
                  unlabeled=pool)
    assert "soft targets" not in capsys.readouterr().err  # quiet
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    plain = distill(teacher, [f"output_dir={tmp_path / 'plain'}", "train.epochs=1", "train.quiet=true"], layers=1)
    plain_history = [json.loads(line) for line in (plain / "metrics.jsonl").read_text().splitlines()]
    # 160 labelled texts in batches of 16 (10 steps) against 160 + 40 (13 steps): the pool was trained on
    assert history[0]["step"] == plain_history[0]["step"] + 3
    # augmenting the labelled texts keeps the pool (it was dropped: 10 steps) and says it is not augmented
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("strop.progress.LINE_EVERY_S", 0.0)  # a log's line after every batch
        augmented = distill(teacher, [f"output_dir={tmp_path / 'augmented'}", "train.epochs=1",
                                      "data.augment=deletion", "train.quiet=false", "method.freeze_layers=0"], layers=1,
                            unlabeled=pool)
    augmented_history = [json.loads(line) for line in (augmented / "metrics.jsonl").read_text().splitlines()]
    assert augmented_history[0]["step"] == history[0]["step"]
    out, err = capsys.readouterr()
    assert "for every training batch (not the 40 unlabelled texts)" in out
    assert "the teacher's soft targets for 160 texts: 1/3 batches" in err  # the teacher's pass shows its progress
    with pytest.raises(StropError, match="no such file"):
        distill(teacher, [f"output_dir={tmp_path / 'x'}"], layers=1, unlabeled=tmp_path / "missing.txt")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("method", ["houlsby", "prompt_tuning", "lora"])
def test_a_teacher_of_adapters_lends_its_blocks_where_they_fold_into_its_weights(method, teacher, tmp_path, capsys):
    """LoRA folds into the weights: the student starts from the merged blocks. Bottleneck adapters and prompt
    tuning do not: prune and a shrunk student are refused (they once started from random weights)."""
    from strop.prune import prune

    adapted = strop.fit(str(teacher / "config.yaml"), [f"method.name={method}", f"output_dir={tmp_path / 'run'}",
                                                      "method.freeze_layers=0"])
    if method == "lora":
        student = distill(adapted, [f"output_dir={tmp_path / 'student'}", "train.epochs=1", "train.quiet=true"],
                          layers=1)
        merged = strop.load(adapted, device="cpu")
        from strop.compress import merged_copy

        top = merged_copy(merged.model).body.layers()[2]
        start = strop.load(student / "student_start", device="cpu").model.body.layers()[1]
        for (name, a), (_, b) in zip(top.state_dict().items(), start.state_dict().items()):
            assert torch.equal(a, b), name  # the teacher's top block, its adapter folded in
        return
    for command in (["distill", str(adapted), f"output_dir={tmp_path / 'student'}", "--layers", "1"],
                    ["prune", str(adapted), f"output_dir={tmp_path / 'pruned'}"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"trained with method.name={method}" in err and "cannot be folded into the model's weights" in err
    assert not (tmp_path / "student").exists() and not (tmp_path / "pruned").exists()
    # a student of its own (model.name=...) needs none of the teacher's blocks: only its soft targets
    assert main(["distill", str(adapted), f"output_dir={tmp_path / 'own'}", f"model.name={teacher / 'model'}",
                 "train.epochs=1", "--quiet"]) == 0


def test_a_run_started_from_a_model_folder_that_lacks_a_weight_is_refused(teacher, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(teacher / "model", folder)
    weights = load_file(folder / "model.safetensors")
    dropped = next(k for k in weights if "attention.output.dense.weight" in k)
    save_file({k: v for k, v in weights.items() if k != dropped}, folder / "model.safetensors")
    assert main(["fit", str(teacher / "config.yaml"), f"model.name={folder}", f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "lacks 1 weight(s) of the encoder" in err and "would start from random values" in err
    assert not (tmp_path / "run").exists()
