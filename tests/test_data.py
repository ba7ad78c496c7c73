import json

import pandas as pd
import pytest

from strop.config import DataConfig
from strop.data.splits import stratified_split as split_stratified
from strop.errors import StropError
from strop.tasks.classification import Classification, check_classes, label_names


def _load(path, **kw):
    columns = DataConfig(text_column=kw.get("text", "text"), label_column=kw.get("label", "label"))
    return Classification.read(path, columns, "text", "data.train")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_reads_the_same(tmp_path, suffix):
    frame = pd.DataFrame({"text": ["a fine day", "so, bad", "ok \"quoted\""], "label": ["pos", "neg", "pos"]})
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        path.write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in zip(frame.text, frame.label)))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    else:
        frame.to_parquet(path)
    data = _load(path)
    assert data.inputs == frame.text.tolist() and data.targets == frame.label.tolist()


def test_numeric_labels_stay_names_and_sort_numerically(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 11}) + "\n" for i in range(22)))
    data = _load(path)
    assert label_names(data.targets)[:3] == ["0", "1", "2"] and label_names(data.targets)[-1] == "10"


@pytest.mark.parametrize("content, words", [
    (None, ["file not found"]),
    ("", ["is empty"]),
    ("text,label\n", ["no examples", "add rows below it"]),
    ("sentence,label\nhi,a\n", ["column 'text' not found", "columns found: 'sentence', 'label'", "data.text_column"]),
    ("text,label\nhi,a\n,b\nyo,\n  ,a\n", ["empty or missing texts", "rows 2, 4"]),
    ("text,label\nhi,a\nyo,\nhey,NaN\n", ["1 empty or missing label in", "rows 2"]),
])
def test_bad_files_get_one_clear_message(tmp_path, content, words):
    path = tmp_path / "train.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(StropError) as error:
        _load(path)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("name, needs", [("train.csv", "a header row"), ("train.jsonl", "one JSON object a line"),
                                         ("train.parquet", "at least one row")])
def test_an_empty_file_is_told_what_its_format_needs(tmp_path, name, needs):
    path = tmp_path / name
    path.write_text("")
    with pytest.raises(StropError, match=f"is empty; it needs {needs}"):
        _load(path)


def test_numbers_are_written_one_way_but_codes_with_a_leading_zero_stay_as_written(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\na,1.0\nb,2\nc,1\n")
    assert _load(path).targets == ["1", "2", "1"]  # one class '1', however written
    path.write_text("text,label\na,01\nb,1\nc,2\nd,00\n")
    assert _load(path).targets == ["01", "1", "2", "00"]  # codes: '01' and '1' are two classes


def test_nan_label_string_is_kept_as_a_label_name_not_missing(tmp_path):
    # Only truly empty cells are missing; the word "NaN" could be a class name.
    path = tmp_path / "train.csv"
    path.write_text("text,label\nhi,a\nhey,NaN\n")
    assert _load(path).targets == ["a", "NaN"]


@pytest.mark.parametrize("task, column, dtype, words", [
    ("text_classification", "label", "Int64", ["2 empty or missing labels", "rows 3, 6"]),
    ("text_classification", "label", "string", ["2 empty or missing labels", "rows 3, 6"]),
    ("text_classification", "text", "string", ["2 empty or missing texts", "rows 3, 6"]),
    ("regression", "label", "Float64", ["2 missing values in regression target column 'label'", "rows 3, 6"]),
    ("multilabel_classification", "label", "string", ["2 empty or missing label sets", "rows 3, 6"]),
])
def test_a_nullable_columns_missing_values_are_missing_not_the_text_na(tmp_path, task, column, dtype, words):
    from strop.tasks import TASKS

    values = {"Int64": [0, 1, 2], "Float64": [0.5, 1.5, 2.5], "string": ["x", "y", "z"]}[dtype] * 4
    frame = pd.DataFrame({"text": pd.array([f"text {i}" for i in range(12)], dtype="string"),
                          "label": values})
    frame[column] = pd.array(frame[column].tolist(), dtype=dtype)
    frame.loc[[2, 5], column] = pd.NA
    frame.to_parquet(tmp_path / "train.parquet")
    with pytest.raises(StropError) as error:
        TASKS.get(task).read(tmp_path / "train.parquet", DataConfig(), "text", "data.train")
    for word in words:
        assert word in str(error.value)


def test_a_nullable_columns_missing_values_stay_missing_when_written_again(tmp_path):
    from strop.data.tables import read_table, write_parquet

    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": pd.array([1, pd.NA, 2], dtype="Int64"),
                          "when": pd.to_datetime(["2024-01-01", None, "2024-01-02"])})
    frame.to_parquet(tmp_path / "d.parquet")
    written = read_table(write_parquet(read_table(tmp_path / "d.parquet"), tmp_path / "again.parquet"))
    assert written["label"].isna().tolist() == [False, True, False]
    with pytest.raises(StropError, match="1 empty or missing label in again.parquet, rows 2"):
        _load(tmp_path / "again.parquet", label="label")
    with pytest.raises(StropError, match="1 empty or missing label in again.parquet, rows 2"):
        _load(tmp_path / "again.parquet", label="when")


def test_columns_of_records_or_lists_whose_items_mix_types_are_written_again(tmp_path):
    from strop.data.tables import read_table, write_parquet

    from strop.tasks.multilabel import MultiLabel

    lines = [{"text": "a", "label": "x", "meta": {"id": 7}, "tags": [1, "b"], "hash": 2**64 - 1,
              "deep": [[1], {"k": 2}], "labels": ["pos", "neg"]},
             {"text": "b", "label": "y", "meta": {"id": "web-7"}, "tags": ["c"], "hash": 5, "deep": [],
              "labels": "neg"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    written = read_table(write_parquet(read_table(tmp_path / "d.jsonl"), tmp_path / "again.parquet"))
    assert written["meta"].tolist() == ['{"id": 7}', '{"id": "web-7"}']
    assert [list(t) for t in written["tags"]] == [["1", "b"], ["c"]] and written["text"].tolist() == ["a", "b"]
    assert written["hash"].tolist() == [str(2**64 - 1), "5"] and list(written["deep"][0]) == ["[1]", '{"k": 2}']
    columns = DataConfig(label_column="labels")  # a multi-label column of lists and single labels reads the same
    read = [MultiLabel.read(tmp_path / name, columns, "text", "data.train").targets for name in ("again.parquet",
                                                                                                "d.jsonl")]
    assert read[0] == read[1] == [("neg", "pos"), ("neg",)]


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_a_quoted_empty_text_in_a_one_column_file_is_a_row_not_a_blank_line(tmp_path, suffix, capsys):
    from strop.data.inputs import clean_strings
    from strop.data.tables import read_table

    (tmp_path / f"q{suffix}").write_text('text\nwhere is my card\n""\nhow do I top up\n\nwhat is the fee\n')
    frame = read_table(tmp_path / f"q{suffix}", "--input")
    assert clean_strings(frame["text"], "q", "--input") == ["where is my card", None, "how do I top up",
                                                          "what is the fee"]
    assert capsys.readouterr().err == ""  # no row spans lines: nothing said of joined lines


def test_a_text_typed_with_combining_accents_is_the_same_text_and_such_a_label_is_kept_and_said(tmp_path, capsys):
    import unicodedata

    from strop.data.splits import distinct_inputs

    nfc, nfd = "Café ouvert", unicodedata.normalize("NFD", "Café ouvert")
    assert nfc != nfd
    assert distinct_inputs([nfc, nfd, (nfd, "x"), (nfc, "x")])[1].tolist() == [0, 0, 1, 1]  # repeats, overlaps
    # a label stays as written (a model saved with one spelling reads its labels so), and the look-alike is said
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [nfc, nfd, "fermé", "fermé"]}).to_csv(tmp_path / "t.csv")
    assert _load(tmp_path / "t.csv").targets == [nfc, nfd, "fermé", "fermé"]
    assert "differ only in case or in characters that show alike" in capsys.readouterr().err
    train, validation = tmp_path / "train.csv", tmp_path / "dev.csv"
    pd.DataFrame({"text": ["a", "b"], "label": [nfc, "fermé"]}).to_csv(train)
    pd.DataFrame({"text": ["c", "d"], "label": [nfd, "fermé"]}).to_csv(validation)
    with pytest.raises(StropError, match=r"Spelled differently: '[^']+' \(train has '[^']+' \(accents typed "
                                         r"differently\)\)"):
        check_classes(_load(train), _load(validation))


def test_texts_a_reader_cannot_tell_apart_are_one_input_and_invisible_characters_are_said(tmp_path, capsys):
    from strop.data.splits import distinct_inputs
    from strop.report import _key

    # case, runs of spaces and a zero-width space: one input to an uncased tokenizer, so one side of a split,
    # and the report's overlap check compares inputs the same way
    alike = ["Great movie", "GREAT  movie", "great\u200b movie ", ("Great movie", "x"), ("great movie", "x")]
    assert distinct_inputs(alike)[1].tolist() == [0, 0, 0, 1, 1]
    assert len({_key(x) for x in alike}) == 2
    # a label with a zero-width space is a class of its own, and said; a text of nothing visible is empty
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["pos", "pos\u200b", "neg", "neg"]}).to_csv(tmp_path / "t.csv")
    assert len(set(_load(tmp_path / "t.csv").targets)) == 3
    assert "'pos' and 'pos\\u200b' (an invisible character, e.g. a zero-width space)" in capsys.readouterr().err
    pd.DataFrame({"text": ["a", "\u200b\ufeff", "c"], "label": ["pos", "neg", "neg"]}).to_csv(tmp_path / "t.csv")
    with pytest.raises(StropError, match="1 empty or missing text in t.csv, rows 2"):
        _load(tmp_path / "t.csv")


def test_column_names_are_read_without_surrounding_spaces(tmp_path):
    from strop.data.tables import read_table

    path = tmp_path / "train.csv"
    path.write_text("text , label\nhi, a\nyo, b\n")
    data = _load(path)
    assert data.inputs == ["hi", "yo"] and data.targets == ["a", "b"]
    # names that only their spaces tell apart are kept as written, and a message shows the spaces
    path.write_text("text,label, label\nhi,a,b\n")
    assert list(read_table(path).columns) == ["text", "label", " label"]
    assert _load(path).targets == ["a"]
    with pytest.raises(StropError, match="columns found: 'text', 'label', ' label'"):
        _load(path, label="gold")


def test_not_utf8(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("text,label\ncaf\u00e9 cr\u00e8me,a\n".encode("latin-1"))
    with pytest.raises(StropError, match="not valid UTF-8"):
        _load(path)


@pytest.mark.parametrize("encoding, advice", [
    ("utf-16", "is UTF-16 text (its first bytes are a byte-order mark), not UTF-8: re-save it as UTF-8, e.g. "
               "iconv -f utf-16 -t utf-8 train.csv > fixed.csv"),
    ("utf-16-le", "is UTF-16LE text (a NUL byte beside every letter, no byte-order mark), not UTF-8: re-save "
                  "it as UTF-8, e.g. iconv -f utf-16le -t utf-8"),
    ("utf-16-be", "iconv -f utf-16be -t utf-8"),
    ("cp1252", "not valid UTF-8 (byte 11): re-save it as UTF-8, e.g. iconv -f cp1252 -t utf-8"),
    ("latin-1", "not valid UTF-8 (byte 14): re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8"),
])
def test_a_file_not_in_utf8_is_told_the_iconv_that_converts_it(tmp_path, encoding, advice):
    # cp1252 (Excel's plain CSV): its curly quotes and euro sign are bytes latin1 reads as control characters
    text = {"cp1252": "\u201csmart\u201d \u20ac5", "latin-1": "caf\u00e9 cr\u00e8me"}.get(encoding, "caf\u00e9")
    path = tmp_path / "train.csv"
    path.write_bytes(f"text,label\n{text},a\nfine,b\n".encode(encoding))
    with pytest.raises(StropError) as error:
        _load(path)
    assert advice in str(error.value)


def test_unknown_extension(tmp_path):
    path = tmp_path / "train.xlsx"
    path.write_text("x")
    with pytest.raises(StropError, match="use one of .csv"):
        _load(path)
    (tmp_path / "train.txt.gz").write_bytes(b"x")  # compressed, but not a table
    with pytest.raises(StropError, match=r"got '\.txt\.gz': a table may be compressed with gzip, bz2 or xz, e\.g\. "
                                         r"data\.csv\.gz; other files, decompress first"):
        _load(tmp_path / "train.txt.gz")


def test_class_checks(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("text,label\na,x\nb,x\n")
    with pytest.raises(StropError, match="at least two classes"):
        check_classes(_load(one), None)
    two = tmp_path / "two.csv"
    two.write_text("text,label\na,x\nb,y\n")
    three = tmp_path / "three.csv"
    three.write_text("text,label\na,x\nb,z\n")
    with pytest.raises(StropError, match="labels z do not occur in the training data"):
        check_classes(_load(two), _load(three))
    assert check_classes(_load(two), _load(two)) == ["x", "y"]
    # amounts read as classes: thousands of labels, shown ten at a time, and regression suggested
    amounts = tmp_path / "amounts.csv"
    amounts.write_text("text,label\n" + "".join(f"t{i},{i * 0.37:.2f}\n" for i in range(500)))
    shifted = tmp_path / "shifted.csv"
    shifted.write_text("text,label\n" + "".join(f"t{i},{i * 0.41:.2f}\n" for i in range(500)))
    with pytest.raises(StropError) as refused:
        check_classes(_load(amounts), _load(shifted))
    assert "more); add training examples" in str(refused.value) and len(str(refused.value)) < 1000
    assert "give task.name=regression" in str(refused.value)


def test_split_is_stratified_and_seeded(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{'a' if i % 4 else 'b'}\n" for i in range(200)))
    data = _load(path)
    train, val = split_stratified(data, 0.2, seed=3)
    assert len(val) == 40 and len(train) == 160
    assert val.targets.count("b") == 10  # 25% of the held-out part, as in the whole
    assert set(train.inputs).isdisjoint(val.inputs)
    again_train, again_val = split_stratified(data, 0.2, seed=3)
    assert again_val.inputs == val.inputs
    assert split_stratified(data, 0.2, seed=4)[1].inputs != val.inputs


def test_a_split_keeps_the_rows_of_a_repeated_input_on_one_side(tmp_path):
    from strop.data.splits import random_split

    path = tmp_path / "d.csv"
    rows = [f"t{i},{'a' if i % 4 else 'b'}\n" for i in range(100)]
    path.write_text("text,label\n" + "".join(rows + rows[:30] + rows[:30:3]))  # 40 rows repeat an earlier one
    data = _load(path)
    for split in (split_stratified, random_split):
        train, val = split(data, 0.2, seed=3)
        assert set(train.inputs).isdisjoint(val.inputs) and len(train) + len(val) == 140
        assert len(set(val.inputs)) == 20  # a fifth of the 100 distinct texts, with all their rows
    held_out = split_stratified(data, 0.2, seed=3)[1]
    assert sum(int(t[1:]) % 4 == 0 for t in set(held_out.inputs)) == 5  # a quarter are b's, as of the 100
    path.write_text("text,label\n" + "".join(f"t{i},a\n" for i in range(10)) + "lone,b\nlone,b\n")
    with pytest.raises(StropError, match="class 'b' has only one distinct input"):
        split_stratified(_load(path), 0.2, seed=0)


def test_split_refuses_singleton_class(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"t{i},a\n" for i in range(10)) + "lone,b\n")
    with pytest.raises(StropError, match="class 'b' has only one example"):
        split_stratified(_load(path), 0.2, seed=0)


def test_a_byte_order_mark_is_no_part_of_the_first_token_or_line(tmp_path):
    from strop.data.conll import read_conll, read_tagged_jsonl
    from strop.pretrain import read_lines

    (tmp_path / "ner.conll").write_text("EU B-ORG\nrejects O\n\nPeter B-PER\n", encoding="utf-8-sig")
    sentences, tags = read_conll(tmp_path / "ner.conll", -1, "data.train")
    assert sentences[0][0] == "EU" and tags[0][0] == "B-ORG"
    (tmp_path / "ner.jsonl").write_text('{"tokens": ["EU"], "tags": ["B-ORG"]}\n', encoding="utf-8-sig")
    assert read_tagged_jsonl(tmp_path / "ner.jsonl", "tokens", "tags", "data.train")[0] == [["EU"]]
    (tmp_path / "domain.txt").write_text("first text\nsecond text\n", encoding="utf-8-sig")
    assert read_lines(tmp_path / "domain.txt")[0] == "first text"


def test_a_conllu_file_is_read_by_its_form_column_without_comments_ranges_or_empty_nodes(tmp_path):
    from strop.data.conll import read_conll

    rows = ["# sent_id = 1", "# text = EU rejects it", "1\tEU\teu\tPROPN\t_\t_\t2\tnsubj\t_\tB-ORG",
            "2\trejects\treject\tVERB\t_\t_\t0\troot\t_\tO", "3-4\tdon't\t_\t_\t_\t_\t_\t_\t_\t_",
            "3\tdo\tdo\tAUX\t_\t_\t2\taux\t_\tO", "4\tn't\tnot\tPART\t_\t_\t2\tadvmod\t_\tO",
            "4.1\tgo\tgo\tVERB\t_\t_\t_\t_\t_\tO", "", "# sent_id = 2",
            "1\tNew York\tNew York\tPROPN\t_\t_\t0\troot\t_\tB-LOC", ""]
    (tmp_path / "ner.conllu").write_text("\n".join(rows), encoding="utf-8")
    sentences, tags = read_conll(tmp_path / "ner.conllu", -1, "data.train")
    assert sentences == [["EU", "rejects", "do", "n't"], ["New York"]]  # FORM, not the ID; a form may hold a space
    assert tags == [["B-ORG", "O", "O", "O"], ["B-LOC"]]
    assert read_conll(tmp_path / "ner.conllu", 3, "data.train")[1][0] == ["PROPN", "VERB", "AUX", "PART"]


def test_conll_and_tagged_jsonl_lines_end_at_line_breaks_and_columns_at_spaces_and_tabs(tmp_path):
    from strop.data.conll import read_conll, read_tagged_jsonl

    # a no-break space inside a token (French numbers) and U+2028 inside a JSON string, which JSON writers
    # leave unescaped: neither splits a token or a line; a lone \r (an old Mac file) ends a line
    (tmp_path / "ner.conll").write_text("Il O\ncoûte O\n10\u00a0000 B-MONEY\r\neuros I-MONEY\r\n\rFin O\n",
                                        encoding="utf-8")
    sentences, tags = read_conll(tmp_path / "ner.conll", -1, "data.train")
    assert sentences == [["Il", "coûte", "10\u00a0000", "euros"], ["Fin"]]
    assert tags == [["O", "O", "B-MONEY", "I-MONEY"], ["O"]]
    line = json.dumps({"tokens": ["a\u2028b", "c"], "tags": ["B-X", "O"]}, ensure_ascii=False)
    (tmp_path / "ner.jsonl").write_text(line + "\n" + line + "\n", encoding="utf-8")
    assert read_tagged_jsonl(tmp_path / "ner.jsonl", "tokens", "tags", "data.train")[0] == [["a\u2028b", "c"]] * 2


def test_a_utf16_conll_or_text_file_names_its_encoding_and_the_fix(tmp_path):
    from strop.data.conll import read_conll
    from strop.pretrain import read_lines

    (tmp_path / "ner.conll").write_text("EU B-ORG\nrejects O\n", encoding="utf-16")
    with pytest.raises(StropError, match=r"ner.conll is UTF-16 text .*re-save it as UTF-8, e.g. iconv -f utf-16"):
        read_conll(tmp_path / "ner.conll", -1, "data.train")
    # one text a line (strop pretrain --data, data.unlabeled, predict --input): without a byte-order mark too,
    # where decoding as UTF-8 would succeed and give texts with a NUL between their letters
    (tmp_path / "pool.txt").write_bytes("great coffee\ncold food\n".encode("utf-16-le"))
    with pytest.raises(StropError, match=r"data.unlabeled: .*pool.txt is UTF-16LE text .*iconv -f utf-16le"):
        read_lines(tmp_path / "pool.txt", "data.unlabeled")


def test_a_tsv_whose_quotes_join_lines_says_which(tmp_path, capsys):
    from strop.data.tables import read_table

    lines = ["text\tlabel"] + [f"sentence {i}\t{'pos' if i % 2 else 'neg'}" for i in range(1, 31)]
    lines[7] = '"Great"\tpos'  # a whole text in quotes: the file reads as quoted
    lines[22], lines[28] = '"so good it hurts\tpos', 'best ever"\tneg'  # a stray quote, closed 6 lines on
    (tmp_path / "q.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    frame = read_table(tmp_path / "q.tsv", "data.train")
    assert len(frame) == 24 and frame["text"][6] == "Great"
    said = capsys.readouterr().err
    assert "q.tsv: read with its quotes, lines 23 to 29 are one row" in said and "24 rows from its 30 lines" in said
    (tmp_path / "plain.tsv").write_text("\n".join(lines[:20]) + "\n", encoding="utf-8")  # no join: nothing said
    assert len(read_table(tmp_path / "plain.tsv", "data.train")) == 19 and capsys.readouterr().err == ""
