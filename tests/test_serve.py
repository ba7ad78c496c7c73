"""strop serve: every endpoint on a live server (uvicorn on 127.0.0.1, a free port, in a thread), each malformed
input, the 413 and 503 paths, micro-batching grouping concurrent requests, a failing request that the server
survives, every task's schema, the `strop serve` command itself, and Schemathesis against the live server's own
OpenAPI schema."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi", reason='strop serve needs pip install "strop[serve]"')
pytest.importorskip("uvicorn", reason='strop serve needs pip install "strop[serve]"')
httpx = pytest.importorskip("httpx")

import strop  # noqa: E402
from conftest import make_texts, write_csv  # noqa: E402
from strop.serve import ServeOptions, bind, create_app, server  # noqa: E402

try:
    import schemathesis
    from hypothesis import HealthCheck, settings
except ImportError:  # the test extra has it; without it the Schemathesis test is skipped
    schemathesis = None


# --- fixtures ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_run(tiny_model_dir, tmp_path_factory):
    """A tiny text classifier (one epoch: what it predicts does not matter here)."""
    path = tmp_path_factory.mktemp("serve")
    train = write_csv(path / "train.csv", make_texts(24, seed=1))
    dev = write_csv(path / "dev.csv", make_texts(8, seed=2))
    return strop.fit(None, [f"model.name={tiny_model_dir}", f"data.train={train}", f"data.validation={dev}",
                            f"output_dir={path / 'run'}", "train.epochs=1", "train.quiet=true", "model.max_length=32",
                            "train.batch_size=8", "train.mixed_precision=no"])


@pytest.fixture(scope="module")
def predictor(text_run):
    return strop.load(text_run, device="cpu")


@contextmanager
def live(app):
    """`app` served by uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL; stops on exit."""
    sock = bind("127.0.0.1", 0)
    uv = server(app, sock)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uv.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


LIMITS = ServeOptions(max_texts_per_request=4, max_request_bytes=4096, queue_size=64)


@pytest.fixture(scope="module")
def url(predictor):
    with live(create_app(predictor, LIMITS)) as base:
        yield base


@pytest.fixture
def client(url):
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c


class Gated:
    """The predictor behind a gate: each call of `records` is logged, waits while the gate is closed, and fails
    for inputs named "explode"."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.task, self.labels, self.info = predictor.task, predictor.labels, predictor.info
        self.reads_pairs = predictor.reads_pairs
        self.model = predictor.model
        self.calls: list[list] = []
        self.gate = threading.Event()
        self.gate.set()

    def records(self, inputs):
        self.calls.append(list(inputs))
        assert self.gate.wait(60), "the gate was never opened"
        if "explode" in inputs:
            raise RuntimeError("the model broke on 'explode'")
        return self.predictor.records(inputs)


@contextmanager
def gated_server(predictor, **options):
    gated = Gated(predictor)
    with live(create_app(gated, ServeOptions(**options))) as base, httpx.Client(base_url=base, timeout=60) as c:
        gated.calls.clear()  # the warm-up
        try:
            yield gated, c
        finally:
            gated.gate.set()  # a test that failed with the gate closed must not keep the server from stopping


def _post(base_url, texts):
    with httpx.Client(base_url=base_url, timeout=60) as c:
        return c.post("/predict", json={"texts": texts})


def _wait_until(condition, what, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _queued(c):
    return c.get("/health").json()["queued"]


# --- endpoints --------------------------------------------------------------------------------------------------

def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok" and health["queued"] == 0 and health["running"] == 0
    assert set(health) == {"status", "queued", "running", "batches", "predicted"}
    assert health["predicted"] >= health["batches"] >= 0


def test_info_names_model_task_labels_version_and_limits(client, predictor):
    info = client.get("/info").json()
    assert info["task"] == "text_classification" and info["labels"] == ["negative", "positive"]
    assert info["model"] == predictor.info["base_model"] and info["strop_version"] == strop.__version__
    assert info["input"] == "texts" and info["limits"]["max_texts_per_request"] == 4
    assert info["limits"]["max_request_bytes"] == 4096


def test_openapi_schema_is_built_from_the_task(client):
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    texts = components["PredictRequest"]["properties"]["texts"]
    assert texts["maxItems"] == 4 and texts["minItems"] == 1 and texts["items"]["minLength"] == 1
    assert components["PredictRequest"]["additionalProperties"] is False
    prediction = components["Prediction"]
    assert prediction["properties"]["label"]["enum"] == ["negative", "positive"]
    assert components["Probabilities"]["required"] == ["negative", "positive"]
    responses = schema["paths"]["/predict"]["post"]["responses"]
    assert {"200", "400", "413", "422", "500", "503"} <= set(responses)
    assert "Retry-After" in responses["503"]["headers"]
    assert {"/health", "/info", "/predict"} == set(schema["paths"])


def test_predict_answers_as_strop_predict_prints(client, text_run, capsys):
    texts = ["great fun", "an awful, dull film", "ünïcode ✓ text"]
    response = client.post("/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["text"] for p in predictions] == texts
    from strop.cli import main

    assert main(["predict", str(text_run), *[a for t in texts for a in ("--text", t)]]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert predictions == printed


MALFORMED = {
    "not JSON": (b'{"texts": [', 400, "not valid JSON"),
    "no body": (b"", 422, "the body is empty"),
    "a list, not an object": (b'["a text"]', 422, "must be a JSON object"),
    "null": (b"null", 422, "must be a JSON object"),
    "no texts": (b"{}", 422, "texts: Field required"),
    "texts not a list": (b'{"texts": "a text"}', 422, "texts: Input should be a valid list"),
    "a number among the texts": (b'{"texts": ["good", 5]}', 422, "texts[1]: Input should be a valid string"),
    "null among the texts": (b'{"texts": [null]}', 422, "texts[0]: Input should be a valid string"),
    "a nested list": (b'{"texts": [["good"]]}', 422, "texts[0]: Input should be a valid string"),
    "an empty text": (b'{"texts": ["good", ""]}', 422, "texts[1]: empty or blank text"),
    "a blank text": (b'{"texts": [" \\t\\n"]}', 422, "texts[0]: empty or blank text"),
    # blank to Python's str.strip(), though not to ECMAScript's \s, by which a client reads the schema's pattern
    "a text of next-line characters": (b'{"texts": ["\\u0085\\u0085"]}', 422, "texts[0]: empty or blank text"),
    "a text of a byte-order mark": (b'{"texts": ["\\ufeff"]}', 422, "texts[0]: empty or blank text"),
    "no texts in the list": (b'{"texts": []}', 422, "at least 1 item"),
    "too many texts": (json.dumps({"texts": ["good"] * 5}).encode(), 422, "at most 4 items"),
    "an unknown field": (b'{"texts": ["good"], "text_pairs": ["bad"]}', 422, "text_pairs: unknown field"),
    "an unpaired surrogate": (b'{"texts": ["\\ud800"]}', 422, "unpaired surrogate"),
    "NaN": (b'{"texts": [NaN]}', 422, "texts[0]: Input should be a valid string"),
}


def test_the_schemas_pattern_for_a_text_reads_alike_in_python_and_ecmascript(client):
    """The schema's pattern is what clients (and Schemathesis) validate by, with ECMAScript's rules, where \\s differs
    from Python's (U+0085, U+001C-U+001F, U+FEFF): spelled out in code points, it means one thing to both."""
    import sys

    schema = client.get("/openapi.json").json()
    patterns = {p for p in re.findall(r'"pattern": ?"((?:[^"\\\\]|\\\\.)*)"', json.dumps(schema))}
    assert patterns and not any(re.search(r"\\\\[sSwWdD]", p) for p in patterns)  # no engine-dependent classes
    for pattern in patterns:
        allowed = re.compile(json.loads(f'"{pattern}"'))
        blank = {chr(c) for c in range(sys.maxunicode + 1) if not allowed.fullmatch(chr(c))}
        assert blank == {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()} | {"\ufeff"}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_input_gets_a_clear_4xx(case, client):
    body, status, message = MALFORMED[case]
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert message in detail and '{"texts": [' in detail  # what is wrong, and what to send
    assert client.get("/health").status_code == 200


def test_other_client_errors_are_json_4xx(client):
    plain = client.post("/predict", content=b'{"texts": ["good"]}', headers={"content-type": "text/plain"})
    assert plain.status_code == 422 and "Content-Type: application/json" in plain.json()["detail"]
    assert client.get("/nowhere").status_code == 404
    wrong_method = client.get("/predict")
    assert wrong_method.status_code == 405 and wrong_method.json()["detail"] and "POST" in wrong_method.headers["allow"]


def test_a_body_over_the_limit_gets_413_by_length_or_while_streaming(client):
    large = json.dumps({"texts": ["good " * 1000]}).encode()
    assert len(large) > 4096
    response = client.post("/predict", content=large, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "4096 bytes" in response.json()["detail"]
    # chunked, without Content-Length: cut off as it streams in
    chunks = iter([b'{"texts": ["', b"good " * 500, b"good " * 500, b'"]}'])
    response = client.post("/predict", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "4096 bytes" in response.json()["detail"]
    assert client.post("/predict", json={"texts": ["good"]}).status_code == 200


def test_a_client_waiting_for_100_continue_gets_413_without_sending_the_body(url):
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer


def test_a_body_that_stops_arriving_gets_408_and_frees_its_slot(predictor):
    import socket

    with gated_server(predictor, max_concurrency=2, body_timeout_s=1.0) as (gated, c):
        host, port = str(c.base_url).removeprefix("http://").rstrip("/").split(":")
        slow = [socket.create_connection((host, int(port)), timeout=30) for _ in range(2)]
        try:
            for sock in slow:  # 8 of the 100 bytes promised, then nothing
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100\r\n\r\n{\"texts\"")
            _wait_until(lambda: c.post("/predict", json={"texts": ["good"]}).status_code == 503,
                        "the slow bodies to hold every slot")
            for sock in slow:
                answer = b""
                while chunk := sock.recv(65536):  # the server answers, then closes the connection
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 408") and b"--body-timeout-s" in answer, answer
        finally:
            for sock in slow:
                sock.close()
        assert c.post("/predict", json={"texts": ["good"]}).status_code == 200
        assert c.get("/info").json()["limits"]["body_timeout_s"] == 1.0


# --- micro-batching, the queue, failures ------------------------------------------------------------------------

def test_micro_batching_groups_concurrent_requests_and_answers_each_its_own(predictor):
    with gated_server(predictor, max_batch=64, max_wait_ms=5) as (gated, c), ThreadPoolExecutor(16) as pool:
        gated.gate.clear()
        first = pool.submit(_post, str(c.base_url), ["the first"])
        _wait_until(lambda: len(gated.calls) == 1, "the first request to reach the model")
        texts = [f"text number {i}" for i in range(12)]
        rest = [pool.submit(_post, str(c.base_url), [text]) for text in texts]
        _wait_until(lambda: _queued(c) == 12, "12 requests to queue")
        gated.gate.set()
        assert first.result().json()["predictions"][0]["text"] == "the first"
        for text, future in zip(texts, rest):
            response = future.result()
            assert response.status_code == 200 and [p["text"] for p in response.json()["predictions"]] == [text]
    assert gated.calls[0] == ["the first"] and sorted(gated.calls[1]) == sorted(texts)  # one call for all 12
    assert len(gated.calls) == 2


def test_micro_batches_are_bounded_by_max_batch(predictor):
    with gated_server(predictor, max_batch=4, max_wait_ms=5) as (gated, c), ThreadPoolExecutor(16) as pool:
        gated.gate.clear()
        first = pool.submit(_post, str(c.base_url), ["the first"])
        _wait_until(lambda: len(gated.calls) == 1, "the first request to reach the model")
        rest = [pool.submit(_post, str(c.base_url), [f"text {i}"]) for i in range(10)]
        _wait_until(lambda: _queued(c) == 10, "10 requests to queue")
        gated.gate.set()
        assert all(f.result().status_code == 200 for f in [first, *rest])
    assert [len(call) for call in gated.calls] == [1, 4, 4, 2]


def test_max_batch_1_predicts_each_request_alone(predictor):
    with gated_server(predictor, max_batch=1, max_wait_ms=5) as (gated, c), ThreadPoolExecutor(8) as pool:
        gated.gate.clear()
        futures = [pool.submit(_post, str(c.base_url), [f"text {i}", f"more {i}"]) for i in range(5)]
        _wait_until(lambda: len(gated.calls) == 1 and _queued(c) == 8, "the requests to queue")
        gated.gate.set()
        assert all(f.result().status_code == 200 for f in futures)
    assert [len(call) for call in gated.calls] == [2] * 5  # a request's own texts stay together


def test_a_full_queue_answers_503_with_retry_after(predictor):
    with gated_server(predictor, queue_size=4, max_texts_per_request=4, max_wait_ms=1) as (gated, c), \
            ThreadPoolExecutor(4) as pool:
        gated.gate.clear()
        running = pool.submit(_post, str(c.base_url), ["running"])
        _wait_until(lambda: len(gated.calls) == 1, "the first request to reach the model")
        waiting = pool.submit(_post, str(c.base_url), ["a", "b", "c", "d"])
        _wait_until(lambda: _queued(c) == 4, "the queue to fill")
        refused = c.post("/predict", json={"texts": ["one more"]})
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1 and "queue is full" in refused.json()["detail"]
        assert c.get("/health").status_code == 200  # the server still answers
        gated.gate.set()
        assert running.result().status_code == 200 and waiting.result().status_code == 200
        assert c.post("/predict", json={"texts": ["one more"]}).status_code == 200  # and the queue drained


def test_too_many_requests_in_progress_get_503(predictor):
    with gated_server(predictor, max_concurrency=2, max_wait_ms=1) as (gated, c), ThreadPoolExecutor(4) as pool:
        gated.gate.clear()
        # one at a time: sent together, both could fall into one micro-batch and never queue
        held = [pool.submit(_post, str(c.base_url), ["held 0"])]
        _wait_until(lambda: len(gated.calls) == 1, "the first request to reach the model")
        held.append(pool.submit(_post, str(c.base_url), ["held 1"]))
        _wait_until(lambda: _queued(c) == 1, "the second request to queue")
        refused = c.post("/predict", json={"texts": ["a third"]})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "busy" in refused.json()["detail"]
        gated.gate.set()
        assert all(f.result().status_code == 200 for f in held)


def test_a_failing_request_gets_500_alone_and_the_server_keeps_serving(predictor):
    with gated_server(predictor, max_batch=64, max_wait_ms=5) as (gated, c), ThreadPoolExecutor(4) as pool:
        failed = c.post("/predict", json={"texts": ["explode"]})
        assert failed.status_code == 500 and "RuntimeError" in failed.json()["detail"]
        # in a micro-batch with others, only the failing request fails
        gated.gate.clear()
        first = pool.submit(_post, str(c.base_url), ["first"])
        _wait_until(lambda: len(gated.calls) == 2, "the first request to reach the model")
        bad = pool.submit(_post, str(c.base_url), ["explode"])
        good = pool.submit(_post, str(c.base_url), ["fine"])
        _wait_until(lambda: _queued(c) == 2, "two requests to queue")
        gated.gate.set()
        assert first.result().status_code == 200 and bad.result().status_code == 500
        assert good.result().json()["predictions"][0]["text"] == "fine"
        assert c.get("/health").json()["status"] == "ok"
        assert c.post("/predict", json={"texts": ["after"]}).status_code == 200


# --- every task, pairs and vectors -------------------------------------------------------------------------------

SERVE_INPUTS = {"text_classification": {"texts": ["great fun", "awful film"]},
                "pair_classification": {"texts": ["the film was good", "bad"], "text_pairs": ["it was good", "fine"]},
                "multilabel_classification": {"texts": ["the film was great"]},
                "regression": {"texts": ["great good fine"]},
                "token_classification": {"texts": ["Anna Smith was in Paris ."]}}


@pytest.mark.parametrize("task", sorted(SERVE_INPUTS))
def test_every_task_serves_what_its_schema_says(task, tiny_model_dir, tmp_path):
    from fastapi.testclient import TestClient
    from test_tasks import _fit

    from strop.tasks import TASKS

    text_tasks = {name for name in TASKS.names() if "text" in TASKS.get(name).input_kinds}  # images: not served yet
    assert set(SERVE_INPUTS) == text_tasks, "a task was added: give it inputs in SERVE_INPUTS"
    run, _ = _fit(task, tiny_model_dir, tmp_path, extra=["train.epochs=1"])
    predictor = strop.load(run, device="cpu")
    app = create_app(predictor)
    body = SERVE_INPUTS[task]
    with TestClient(app) as c:
        response = c.post("/predict", json=body)
        assert response.status_code == 200, response.text
        inputs = list(zip(body["texts"], body["text_pairs"])) if "text_pairs" in body else body["texts"]
        assert response.json()["predictions"] == predictor.records(inputs)
        app.state.response_model.model_validate(response.json())  # the schema's model
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        assert set(schema["PredictRequest"]["required"]) == set(body)
        assert c.get("/info").json()["task"] == task
        if task == "pair_classification":
            uneven = c.post("/predict", json={"texts": ["a", "b"], "text_pairs": ["c"]})
            assert uneven.status_code == 422 and "one text_pairs item for each texts item" in uneven.json()["detail"]
            single = c.post("/predict", json={"texts": ["a"]})
            assert single.status_code == 422 and "text_pairs: Field required" in single.json()["detail"]


def test_vector_models_take_vectors_of_their_feature_count(tmp_path):
    from fastapi.testclient import TestClient
    from test_vectors import _vectors

    train, dev = _vectors(tmp_path / "train.csv", 60, 1), _vectors(tmp_path / "dev.csv", 20, 2)
    run = strop.fit(None, ["model.name=mlp", "task.name=regression", f"data.train={train}", f"data.validation={dev}",
                           "data.label_column=y", f"output_dir={tmp_path / 'run'}", "train.quiet=true",
                           "train.epochs=1", "model.hidden=[8]"])
    predictor = strop.load(run, device="cpu")
    app = create_app(predictor)
    with TestClient(app) as c:
        info = c.get("/info").json()
        assert info["input"] == "vectors" and info["feature_columns"] == ["a", "b", "c", "d"]
        vectors = [[0.5, 5, 50, 0], [1, 2, 3, 4]]
        response = c.post("/predict", json={"vectors": vectors})
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert predictions == predictor.records([[0.5, 5.0, 50.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
        assert set(predictions[0]) == {"value"}
        app.state.response_model.model_validate(response.json())
        schema = c.get("/openapi.json").json()["components"]["schemas"]["PredictRequest"]
        vector = schema["properties"]["vectors"]["items"]
        assert vector["minItems"] == 4 == vector["maxItems"] and len(vector["prefixItems"]) == 4
        assert [item["title"] for item in vector["prefixItems"]] == ["a", "b", "c", "d"]
        for bad, message in [([[1, 2, 3]], "vectors[0][3]: missing: each vector has 4 numbers"),
                             ([[1, 2, 3, 4, 5]], "at most 4 items"),
                             ([[1, 2, 3, 1e12]], "vectors[0][3]: Input should be less than or equal to"),
                             ([[1, 2, "3", 4]], "vectors[0][2]: Input should be a valid number"),
                             ([[1, 2, True, 4]], "vectors[0][2]"), ({"a": 1}, "vectors: Input should be a valid list")]:
            response = c.post("/predict", json={"vectors": bad})
            assert response.status_code == 422 and message in response.json()["detail"], (bad, response.text)
        for literal in (b"NaN", b"Infinity", b"1e999"):
            response = c.post("/predict", content=b'{"vectors": [[1, 2, ' + literal + b', 4]]}',
                              headers={"content-type": "application/json"})
            assert response.status_code == 422 and "finite number" in response.json()["detail"], response.text
        texts = c.post("/predict", json={"texts": ["a text"]})
        assert texts.status_code == 422 and "this model reads vectors" in texts.json()["detail"]


# --- image models ------------------------------------------------------------------------------------------------

class ImageWidths:
    """An image model's stand-in (no network to train): `records` reads each image file's bytes as an image model
    does (ImageBackbone.pixels, in the server's worker) and labels it by its width."""

    def __init__(self):
        from types import SimpleNamespace

        from strop.backbones.image import ImageBackbone

        self.task, self.labels = SimpleNamespace(name="image_classification", columns=()), ["narrow", "wide"]
        self.info, self.reads_pairs = {"base_model": "a stand-in"}, False
        self.model = SimpleNamespace(body=SimpleNamespace(kind="image"))
        self._backbone = SimpleNamespace(training=False, train_transform=None, eval_transform=lambda image: image)
        self._pixels = ImageBackbone.pixels

    def records(self, inputs):
        wide = [float(self._pixels(self._backbone, data).width >= 16) for data in inputs]
        return [{"label": self.labels[int(w)], "score": 1.0, "probabilities": {"narrow": 1 - w, "wide": w}}
                for w in wide]


def _png(width: int, height: int) -> str:
    """A grey PNG, base64-encoded."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _png_of_broken_pixels() -> str:
    """A PNG whose header and chunk checksums are right but whose pixel data stops short."""
    import base64
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)  # 4x4, 8-bit RGB
    pixels = zlib.compress(b"\0" * 13 * 4)[:-6]
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode("ascii")


def test_images_are_checked_by_their_header_on_arrival_and_decoded_once_in_the_worker(monkeypatch):
    import strop.data.images as images
    from fastapi.testclient import TestClient

    # decoding is the costly part (a 10 KB PNG can hold 89 million pixels): never on the event loop, once
    decoders, real = [], images.open_rgb
    monkeypatch.setattr(images, "open_rgb", lambda data: decoders.append(threading.current_thread().name)
                        or real(data))
    with TestClient(create_app(ImageWidths(), ServeOptions(max_image_pixels=32 * 32))) as c:
        decoders.clear()  # the warm-up's
        response = c.post("/predict", json={"images": [_png(8, 8), _png(32, 32)]})
        assert response.status_code == 200, response.text
        assert [p["label"] for p in response.json()["predictions"]] == ["narrow", "wide"]
        assert len(decoders) == 2 and all(name.startswith("strop-predict") for name in decoders), decoders
        large = c.post("/predict", json={"images": [_png(8, 8), _png(33, 32)]})
        assert large.status_code == 422, large.text
        assert "images[1]: 33x32 pixels, more than the server's limit of 1,024 (--max-image-pixels)" in \
            large.json()["detail"]
        assert len(decoders) == 2  # refused by its header, nothing decoded
        # a header that reads well, pixels that do not: found in the worker, and said of that image
        broken = c.post("/predict", json={"images": [_png(8, 8), _png_of_broken_pixels()]})
        assert broken.status_code == 422, broken.text
        assert broken.json()["detail"].startswith("images[1]: truncated or damaged")
        assert broken.json()["errors"][0]["loc"] == ["images", 1] and len(decoders) == 4
        assert c.get("/info").json()["limits"]["max_image_pixels"] == 1024
        assert c.post("/predict", json={"images": [_png(8, 8)]}).status_code == 200


def test_base64_with_line_breaks_is_read_and_a_data_url_of_no_image_is_said():
    import textwrap

    from fastapi.testclient import TestClient

    wrapped = "\n".join(textwrap.wrap(_png(20, 20), 76)) + "\n"  # as the Linux `base64` writes it
    assert "\n" in wrapped.strip()
    with TestClient(create_app(ImageWidths())) as c:
        for sent in (wrapped, wrapped.replace("\n", "\r\n"), f"data:image/png;base64,{wrapped}"):
            response = c.post("/predict", json={"images": [sent]})
            assert response.status_code == 200 and response.json()["predictions"][0]["label"] == "wide", response.text
        for sent, message in [(f"data:text/html;base64,{_png(8, 8)}", "a data URL of text/html, not of an image"),
                              ("data:image/svg+xml,<svg></svg>", "a data URL without ;base64,"),
                              ("photos/cat.jpg", "not base64")]:
            response = c.post("/predict", json={"images": [_png(8, 8), sent]})
            assert response.status_code == 422 and f"images[1]: {message}" in response.json()["detail"], response.text


# --- the command ------------------------------------------------------------------------------------------------

def test_strop_serve_command_serves_and_stops_on_ctrl_c(text_run):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "strop.cli", "serve", str(text_run), "--port", "0",
                                "--max-batch", "8", "--max-texts-per-request", "2"],
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "http://" not in line:
            assert time.monotonic() < deadline and process.poll() is None, f"strop serve did not start: {line}"
            line = process.stderr.readline()
        base = re.search(r"http://127\.0\.0\.1:\d+", line).group()
        with httpx.Client(base_url=base, timeout=60) as c:
            _wait_until(lambda: _ready(c), "the server to answer", 120)
            assert c.get("/info").json()["limits"]["max_batch"] == 8
            assert c.post("/predict", json={"texts": ["great fun"]}).json()["predictions"][0]["text"] == "great fun"
            assert c.post("/predict", json={"texts": ["a", "b", "c"]}).status_code == 422
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        process.stderr.close()


def _ready(c) -> bool:
    try:
        return c.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def test_strop_serve_refuses_bad_options_and_a_missing_extra(text_run, capsys, monkeypatch, tmp_path):
    from strop.cli import main

    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    assert "holds no trained model" in capsys.readouterr().err
    assert main(["serve", str(text_run), "--max-batch", "0"]) == 2
    assert "--max-batch: give a whole number of at least 1" in capsys.readouterr().err
    assert main(["serve", str(text_run), "--queue-size", "8", "--max-texts-per-request", "16"]) == 2
    assert "could never be queued" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    assert main(["serve", str(text_run)]) == 2
    err = capsys.readouterr().err
    assert 'pip install "strop[serve]"' in err and "Traceback" not in err


def test_the_listening_socket_is_tcp_so_that_answers_are_not_held_back():
    import socket

    # asyncio sets TCP_NODELAY only on sockets whose protocol says TCP; on one made with protocol 0, Nagle's
    # algorithm and the client's delayed ACK held every answer back by some 40 ms
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_a_port_in_use_is_one_message(text_run, capsys):
    from strop.cli import main

    sock = bind("127.0.0.1", 0)
    try:
        assert main(["serve", str(text_run), "--port", str(sock.getsockname()[1])]) == 2
        assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    finally:
        sock.close()


# --- Schemathesis against the live server's own schema ----------------------------------------------------------

@pytest.fixture(scope="module")
def schema_url(predictor):
    with live(create_app(predictor, LIMITS)) as base:
        yield f"{base}/openapi.json"


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_fuzzing_finds_no_server_error_and_no_response_outside_the_schema(mode, schema_url):
    """Schemathesis's Python API: requests generated from the schema (valid ones, then invalid ones) to every
    operation, each response checked by its default checks (no 5xx, status codes, content types, headers and
    bodies as the schema says, valid data accepted, invalid data rejected)."""
    if schemathesis is None:
        pytest.skip("schemathesis is not installed (it is in the test extra)")
    from hypothesis import given

    schema = schemathesis.openapi.from_url(schema_url, timeout=30)
    strategy = schema.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @given(case=strategy)
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(timeout=30)

    check()


def test_schemathesis_coverage_and_examples_phases_pass(schema_url, tmp_path):
    """Schemathesis's command line on the same live server: the schema's examples and its boundary cases
    (the coverage phase: each constraint just met and just broken), with every check."""
    if schemathesis is None:
        pytest.skip("schemathesis is not installed (it is in the test extra)")
    result = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", schema_url, "--phases",
                             "examples,coverage", "--checks", "all", "--max-examples", "20", "--seed", "1",
                             "--no-color", "--request-timeout", "30"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout


# --- other forms of the model ----------------------------------------------------------------------------------

def _served_predictions(predictor, texts):
    with live(create_app(predictor, LIMITS)) as base, httpx.Client(base_url=base, timeout=30) as c:
        response = c.post("/predict", json={"texts": texts})
        assert response.status_code == 200, response.text
        return response.json()["predictions"]


def test_the_int8_form_is_served_with_quantised_linear_layers(text_run):
    import torch

    from strop.serve import quantized

    predictor = quantized(strop.load(text_run, device="cpu"), text_run)
    dynamic = [m for m in predictor.model.modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]
    assert dynamic and not any(type(m) is torch.nn.Linear for m in predictor.model.modules())
    texts = ["great fun", "an awful, dull film"]
    predictions = _served_predictions(predictor, texts)
    assert [p["text"] for p in predictions] == texts and all(p["label"] in predictor.labels for p in predictions)


def test_an_onnx_export_is_served_as_the_run_predicts(text_run, tmp_path):
    pytest.importorskip("onnxruntime", reason='ONNX needs pip install "strop[export]"')
    from strop.export import export

    path = export(text_run, "onnx", tmp_path / "model.onnx")
    texts = ["great fun", "an awful, dull film", "ünïcode ✓ text"]
    served = _served_predictions(strop.load(path), texts)
    direct = strop.load(text_run, device="cpu").records(texts)
    assert [p["label"] for p in served] == [r["label"] for r in direct]
    for s, d in zip(served, direct):
        assert s["probabilities"] == pytest.approx(d["probabilities"], abs=1e-4)


def test_int8_is_refused_for_an_onnx_file(text_run, tmp_path):
    from strop.errors import StropError
    from strop.serve import quantized

    with pytest.raises(StropError, match="ONNX file is served as it is"):
        quantized(strop.load(text_run, device="cpu"), tmp_path / "model.onnx")
