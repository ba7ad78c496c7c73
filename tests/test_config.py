import pytest

from strop.config import Config, load_config
from strop.errors import StropError


def test_defaults_and_typed_overrides():
    cfg = load_config(None, ["optim.lr=3e-5", "train.epochs=7", "train.group_by_length=false",
                             "data.validation=null", "output_dir=runs/x"])
    assert cfg.optim.lr == 3e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 7
    assert cfg.train.group_by_length is False
    assert cfg.data.validation is None
    assert cfg.output_dir == "runs/x"
    assert cfg.model.name == "minilm-l6"
    assert load_config(None).optim.lr == "auto"
    assert load_config({"optim": {"lr": 1}}).optim.lr == 1.0  # a YAML integer is a number too


def test_yaml_file_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.001\ntrain:\n  epochs: 2\n")
    cfg = load_config(path, ["train.epochs=4"])
    assert cfg.optim.lr == 0.001 and cfg.train.epochs == 4
    # a section left empty in the file (its keys commented out) takes overrides like an absent one
    path.write_text("optim:\n  lr: 0.001\ntrain:\n  # epochs: 3\n")
    assert load_config(path, ["train.epochs=4"]).train.epochs == 4


def test_a_value_reads_alike_in_yaml_and_on_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    # unquoted yes/no/on/off are words (YAML 1.2), read as true or false by the settings that are
    path.write_text("train:\n  mixed_precision: no\n  resume: 1\n  quiet: on\ndata:\n  text_column: yes\n"
                    "method:\n  cache_bottom: off\n")
    cfg = load_config(path)
    assert cfg.train.mixed_precision == "no" and cfg.data.text_column == "yes"
    assert cfg.train.resume is True and cfg.train.quiet is True and cfg.method.cache_bottom is False
    cfg = load_config(None, ["train.batch_size=16.0", "train.epochs=1e1", "method.cache_bottom=1"])
    assert cfg.train.batch_size == 16 and cfg.train.epochs == 10 and cfg.method.cache_bottom is True
    for bad, words in (("train.batch_size=16.5", "must be an integer"), ("train.resume=2", "must be true or false")):
        with pytest.raises(StropError, match=words):
            load_config(None, [bad])
    with pytest.raises(StropError, match=r"a config file comes first: strop fit CONFIG.yaml key=value"):
        load_config(None, ["base.yaml"])


def test_strop_version_says_the_installed_version(capsys):
    import strop
    from strop.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"strop {strop.__version__}"


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(None, ["optim.lr=2e-5", "method.name=freeze", "data.train=a.csv"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(Exception):
        cfg.optim.lr = 1.0


@pytest.mark.parametrize("override, words", [
    ("optim.learning_rate=1e-3", ["optim.learning_rate", "known keys in optim", "lr"]),
    ("trian.epochs=3", ["trian", "did you mean 'train'"]),
    ("epochs=3", ["unknown key 'epochs' (did you mean 'train.epochs'?)"]),  # the section left out
    ("train.lr=1e-4", ["unknown key 'train.lr' (did you mean 'optim.lr'?)"]),  # in another section
    ("optim.warmup=1.5", ["optim.warmup must be a fraction in [0, 1) or a whole number of steps", "1.5"]),
    ("train.epochs=three", ["train.epochs must be an integer", "three"]),
    ("train.epochs=2.5", ["train.epochs must be an integer"]),
    ("optim.name=adamm", ["optim.name must be one of", "adamw", "adamm"]),
    ("optim.schedule=cosin", ["optim.schedule must be one of", "got 'cosin' (did you mean 'cosine'?)"]),
    ("optim.name=SGD", ["got 'SGD' (did you mean 'sgd'?)"]),
    ("method.name=lorra", ["unknown method 'lorra'", "full", "linear_probe"]),
    ("train.resume=maybe", ["train.resume must be true or false"]),
    ("optim.lr=fast", ["optim.lr must be a number > 0, auto or find", "fast"]),
    ("optim.lr=0", ["optim.lr must be a number > 0, auto or find"]),
    ("optim.lr", ["must look like key=value"]),
    ("train.seed=-1", ["train.seed must be a whole number from 0 to 4294967294", "-1"]),
    ("train.seed=5000000000", ["train.seed must be a whole number from 0 to 4294967294"]),
])
def test_bad_keys_and_values_name_the_key(override, words):
    with pytest.raises(StropError) as error:
        load_config(None, [override])
    for word in words:
        assert word in str(error.value)


def test_a_list_or_mapping_where_one_value_goes_says_so_not_must_be_a_string():
    for section, key, value, words in [("optim", "lr", [1e-5], "optim.lr takes one value (a number, or a word), not a "
                                                                "list; got [1e-05]"),
                                       ("train", "batch_size", {"a": 16}, "train.batch_size takes one value (a whole "
                                                                          "number, or a word), not a mapping"),
                                       ("method", "cache_bottom", [True], "method.cache_bottom takes one value (true "
                                                                         "or false, or a word), not a list")]:
        with pytest.raises(StropError) as error:
            load_config({section: {key: value}})
        assert words in str(error.value)


def test_a_section_the_file_gives_as_a_list_is_blamed_on_the_file_not_on_a_correct_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: [epochs, 3]\n")
    with pytest.raises(StropError, match=r"^train in the config must be a mapping of keys, e.g. train: \{key: "
                                         r"value\}; got \['epochs', 3\]$"):
        load_config(path, ["train.quiet=true"])
    with pytest.raises(StropError, match=r"override 'train.epochs.x=1': 'epochs' is a value, not a section"):
        load_config(None, ["train.epochs=3", "train.epochs.x=1"])


def test_an_override_written_with_a_space_for_the_equals_sign_says_so(tmp_path, monkeypatch):
    """strop fit data.train reviews.csv read data.train as a config file: "config file not found: data.train"."""
    from strop.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(StropError, match=r"config file not found: data.train \('data.train' is a config key: give it "
                                         r"as data.train=VALUE, with no spaces around =\)"):
        load_config("data.train", ["reviews.csv"])
    with pytest.raises(StropError, match=r"not found: nothing.yaml$"):  # a file name is only that
        load_config("nothing.yaml")
    with pytest.raises(StropError, match=r"override 'reviews.csv' must look like key=value.*\(with no space after =: "
                                         r"data.train=reviews.csv\)"):
        load_config(None, ["data.train=", "reviews.csv"])
    assert main(["fit", "train.epochs", "3"]) == 2 and not list(tmp_path.iterdir())


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(StropError, match="mapping"):
        load_config(path)
    (tmp_path / "train.csv").write_text("text,label\nfine,pos\n")
    with pytest.raises(StropError, match=r"got str \(a data file is given as data.train=.*train.csv\)"):
        load_config(tmp_path / "train.csv")
    (tmp_path / "train.jsonl").write_text('{"text": "a: b", "label": "x"}\n{"text": "c", "label": "y"}\n')
    with pytest.raises(StropError, match=r"is not valid YAML \(a data file is given as data.train=.*train.jsonl\)"):
        load_config(tmp_path / "train.jsonl")
    with pytest.raises(StropError, match="is a folder: give a YAML config file"):  # it said: not found
        load_config(tmp_path)
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: 3\n   bad: [\n")
    with pytest.raises(StropError) as error:  # where in the file, by the file's name
        load_config(tmp_path / "bad.yaml")
    assert 'in "bad.yaml", line 3, column 7' in str(error.value) and "unicode string" not in str(error.value)


def test_a_dotted_key_in_a_mapping_is_told_to_nest(tmp_path):
    with pytest.raises(StropError, match=r"key 'data.train': a dotted key is an override \(strop fit \.\.\. "
                                         r"data.train=VALUE\); in a mapping, nest it: data: \{train: VALUE\}"):
        load_config({"data.train": "x.csv"})  # it said: did you mean 'train'?
    path = tmp_path / "dotted.yaml"
    path.write_text("train:\n  optim.lr: 1e-3\n")  # under the wrong section: no such nesting, the plain message
    with pytest.raises(StropError, match="unknown key 'train.optim.lr'"):
        load_config(path)
