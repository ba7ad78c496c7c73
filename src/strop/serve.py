"""`strop serve RUN_DIR`: a trained run behind an HTTP JSON API (FastAPI on uvicorn).

  POST /predict   the task's inputs ({"texts": [...]}, with "text_pairs" for pair models, {"vectors": [...]}
                  for MLP models, or {"images": [...]}, image files base64-encoded, for image models)
                  -> {"predictions": [one object per input, as `strop predict` prints them]}
  GET  /health    {"status": "ok", "queued": ..., "running": ...}
  GET  /info      the model, task, labels, strop version, what /predict reads and the server's limits
  GET  /openapi.json, /docs   the schema, built from the loaded task (label names, feature count, limits)

Requests are answered by one worker that groups the inputs of concurrent requests into micro-batches: it takes
the requests waiting, up to `max_batch` inputs, after waiting at most `max_wait_ms` from the first one's arrival,
runs the model once on them (in its own thread, so the event loop keeps accepting and parsing requests) and
hands each request its slice. Memory stays bounded: at most `queue_size` inputs wait for the model (beyond that,
503 with Retry-After), at most `max_concurrency` requests are read, parsed or waiting at once (beyond that, 503),
a body is at most `max_request_bytes` (beyond that, 413, without reading the rest into memory) and arrives
within `body_timeout_s` (beyond that, 408).

FastAPI and uvicorn are an optional extra: `pip install "strop[serve]"`; this module imports them only when a
server is built.
"""

import asyncio
import base64
import binascii
import collections
import io
import logging
import math
import os
import re
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from strop.errors import StropError

SERVE_EXTRA = 'pip install "strop[serve]"'
LOG = logging.getLogger("strop.serve")
FEATURE_RANGE = 1e6  # vector features: at most this many training standard deviations from the training mean
# A text's non-blank characters: not Python's whitespace (what str.strip() takes) nor a byte-order mark, spelled
# out rather than as \S, which the OpenAPI schema's pattern would be read by with ECMAScript's rules: there \s
# leaves out U+0085 and U+001C-U+001F and takes in U+FEFF, and a client could send a text valid by the schema
# that the server refused.
NOT_BLANK = re.compile(r"[^\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]")


def require_serve() -> None:
    """Raises StropError naming the extra when FastAPI or uvicorn is missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise StropError(f"strop serve needs FastAPI and uvicorn ({error.name or 'a module'} is not installed): "
                         f"{SERVE_EXTRA}") from None


@dataclass(frozen=True)
class ServeOptions:
    """The server's limits. queue_size counts inputs (texts, pairs, vectors) waiting for the model, over all
    requests; max_concurrency counts POST requests being read, parsed or answered."""

    max_batch: int = 64
    max_wait_ms: float = 10.0
    queue_size: int = 512
    max_request_bytes: int = 1 << 20
    max_texts_per_request: int = 256
    max_concurrency: int = 256
    # image models: a larger image is refused on arrival, by its header; more than a phone's photo, and far less
    # than Pillow's bomb limit (89M), since each image is decoded in the one worker every request waits on
    max_image_pixels: int = 40_000_000
    body_timeout_s: float = 30.0  # a body not whole by then gets 408 and frees its --max-concurrency slot
    threads: Optional[int] = None  # torch threads; None: default_threads()

    def __post_init__(self):
        for name in ("max_batch", "queue_size", "max_request_bytes", "max_texts_per_request", "max_concurrency",
                     "max_image_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise StropError(f"--{name.replace('_', '-')}: give a whole number of at least 1; got {value}")
        if not (isinstance(self.max_wait_ms, (int, float)) and math.isfinite(self.max_wait_ms)
                and 0 <= self.max_wait_ms <= 10_000):
            raise StropError(f"--max-wait-ms: give milliseconds from 0 to 10000; got {self.max_wait_ms}")
        if not (isinstance(self.body_timeout_s, (int, float)) and math.isfinite(self.body_timeout_s)
                and self.body_timeout_s > 0):
            raise StropError(f"--body-timeout-s: give a number of seconds above 0; got {self.body_timeout_s}")
        if self.max_texts_per_request > self.queue_size:
            raise StropError(f"--max-texts-per-request ({self.max_texts_per_request}) is larger than --queue-size "
                             f"({self.queue_size}), so such a request could never be queued: lower it or raise "
                             "--queue-size")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise StropError(f"--threads: give a whole number of at least 1; got {self.threads}")


# --- what /predict reads, from the loaded model -----------------------------------------------------------------

@dataclass(frozen=True)
class InputSpec:
    """What the model reads: "texts", "pairs" (texts and text_pairs), "vectors" (num_features numbers each) or
    "images" (image files, base64-encoded: a client sends the image, never a path for the server to open)."""

    kind: str
    num_features: int = 0
    feature_columns: tuple[str, ...] = ()
    bounds: tuple[tuple[float, float], ...] = ()  # per feature, a million standard deviations around its mean

    @classmethod
    def of(cls, predictor) -> "InputSpec":
        body = predictor.model.body.kind
        if body == "image":
            return cls("images")
        if body == "vector":
            columns = tuple(predictor.info.get("feature_columns") or ())
            count = len(columns) or int(getattr(predictor.model.body, "num_features", 0))
            mean, std = getattr(predictor.model.body, "mean", None), getattr(predictor.model.body, "std", None)
            bounds = ()
            if mean is not None and std is not None and len(mean) == len(std) == count:
                # beyond this a feature means nothing to the model, and float32 layers may overflow
                bounds = tuple((float(m) - FEATURE_RANGE * float(s), float(m) + FEATURE_RANGE * float(s))
                               for m, s in zip(mean, std))
            return cls("vectors", count, columns, bounds)
        if body == "text":
            pairs = predictor.reads_pairs
            return cls("pairs" if pairs else "texts")
        raise StropError(f"strop serve: this model reads {body} inputs, which the server cannot take yet")

    @property
    def fields(self) -> tuple[str, ...]:
        return {"texts": ("texts",), "pairs": ("texts", "text_pairs"), "vectors": ("vectors",),
                "images": ("images",)}[self.kind]

    def _middle(self) -> list[float]:
        """A vector in range: the training means where known, else zeros."""
        if self.bounds:
            return [round((low + high) / 2, 6) for low, high in self.bounds]
        return [0.0] * self.num_features

    def example(self) -> dict:
        if self.kind == "images":
            return {"images": [base64.b64encode(_png(8)).decode("ascii")]}
        if self.kind == "vectors":
            return {"vectors": [self._middle()]}
        if self.kind == "pairs":
            return {"texts": ["the film was great"], "text_pairs": ["it was good"]}
        return {"texts": ["the film was great", "a dull, slow story"]}

    def warmup_input(self) -> list:
        if self.kind == "images":
            return [_png(64)]
        if self.kind == "vectors":
            return [self._middle()]
        return [("warm up", "warm up")] if self.kind == "pairs" else ["warm up"]

    def inputs(self, request) -> list:
        """The predictor's inputs of a validated request."""
        if self.kind == "images":
            return list(request.images)  # each already decoded from base64 and checked (see _image_type)
        if self.kind == "vectors":
            return [list(v) for v in request.vectors]
        if self.kind == "pairs":
            return list(zip(request.texts, request.text_pairs))
        return list(request.texts)


def _png(size: int) -> bytes:
    """A grey size x size PNG: the example of the schema and the server's warm-up input."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


BASE64_SPACE = str.maketrans("", "", " \t\r\n")  # `base64` breaks lines at 76 columns, MIME at 76, PEM at 64
SEND_AN_IMAGE = "send a JPEG, PNG or another image file Pillow reads"


def _image_type(max_pixels: int):
    """A JSON string holding an image file (JPEG, PNG, ... as Pillow reads them) in base64; checked on arrival,
    on the event loop, only as far as is cheap: decoded from base64, then the image's header (its format, and
    its size under max_pixels), never its pixels, which a small file can make seconds of work. The value the
    server works with is the file's bytes, decoded once, in the worker (pixels that fail there get their
    request a 422 naming the image, see UndecodableImage): the queue holds compressed files, so its memory
    stays bounded by the request limits (a decoded photo can be a hundred times its file)."""
    from typing import Annotated

    from pydantic import AfterValidator, StrictStr, WithJsonSchema

    from strop.data.images import BadImage, image_size

    def check(text: str) -> bytes:
        text = _base64_of(text)  # its own errors: a data URL that holds no image
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64: send each image file's bytes base64-encoded (RFC 4648)") from None
        try:
            width, height = image_size(data)
        except BadImage as error:
            raise ValueError(f"{error}: {SEND_AN_IMAGE}") from None
        if width * height > max_pixels:
            raise ValueError(f"{width}x{height} pixels, more than the server's limit of {max_pixels:,} "
                             "(--max-image-pixels): send a smaller image")
        return data

    return Annotated[StrictStr, AfterValidator(check),
                     WithJsonSchema({"type": "string", "contentEncoding": "base64", "contentMediaType": "image/*",
                                     "minLength": 1})]


def _base64_of(text: str) -> str:
    """An images item's base64, without its data URL's prefix (what a browser's FileReader gives:
    "data:image/jpeg;base64,...") and without spaces or line breaks.

    Raises:
        ValueError: a data URL of something other than an image, or not base64-encoded.
    """
    if text[:5].lower() == "data:":  # RFC 2397: data:[<media type>][;<parameter>...][;base64],<data>
        head, comma, text = text[5:].partition(",")
        head = head.strip().lower()
        media = head.split(";", 1)[0].strip() or "text/plain"  # RFC 2397's default
        # a browser labels a file whose type it does not know application/octet-stream: its bytes may be an image
        if not media.startswith("image/") and media != "application/octet-stream":
            raise ValueError(f"a data URL of {media[:40]}, not of an image: send an image file "
                             "(data:image/jpeg;base64,... or its base64 alone)")
        if not comma or not head.endswith(";base64"):
            raise ValueError("a data URL without ;base64,: send the image file base64-encoded "
                             "(data:image/jpeg;base64,...)")
    return text.translate(BASE64_SPACE)


def _text_type():
    """A JSON string with a non-blank character; checked in Python, as `strop predict --text` checks."""
    from typing import Annotated

    from pydantic import AfterValidator, StrictStr, WithJsonSchema

    def check(text: str) -> str:
        if not NOT_BLANK.search(text):
            raise ValueError("empty or blank text: give a text to predict")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the text holds an unpaired surrogate (\\ud800-\\udfff): send valid Unicode") from None
        return text

    return Annotated[StrictStr, AfterValidator(check),
                     WithJsonSchema({"type": "string", "minLength": 1, "pattern": NOT_BLANK.pattern})]


def request_model(spec: InputSpec, options: ServeOptions):
    """The pydantic model of POST /predict's body for this model (strict: no coercion, no unknown fields)."""
    from typing import Annotated

    from pydantic import ConfigDict, Field, create_model, model_validator

    # strict items (no "1" for 1, no 1 for "1", no true for 1); unknown fields refused
    config = ConfigDict(extra="forbid", json_schema_extra={"examples": [spec.example()]})
    limit = options.max_texts_per_request
    if spec.kind == "vectors":
        n = spec.num_features
        what = f"{n} features" + (f" ({', '.join(spec.feature_columns)})" if spec.feature_columns else "")
        names = spec.feature_columns if len(spec.feature_columns) == n else tuple(f"feature {i}" for i in range(n))
        bounds = spec.bounds or ((None, None),) * n
        vector = tuple[tuple(Annotated[float, Field(strict=True, allow_inf_nan=False, ge=low, le=high, title=name)]
                             for name, (low, high) in zip(names, bounds))]
        return create_model("PredictRequest", __config__=config, vectors=(
            Annotated[list[vector], Field(min_length=1, max_length=limit,
                                          description=f"vectors of {what}, in the order the model was trained with")],
            ...))
    if spec.kind == "images":
        return create_model("PredictRequest", __config__=config, images=(
            Annotated[list[_image_type(options.max_image_pixels)], Field(min_length=1, max_length=limit)],
            Field(..., description=f"1 to {limit} image files (JPEG, PNG, ...), each base64-encoded")))
    text = _text_type()
    text_list = Annotated[list[text], Field(min_length=1, max_length=limit)]
    if spec.kind == "texts":
        return create_model("PredictRequest", __config__=config,
                            texts=(text_list, Field(..., description=f"1 to {limit} texts")))

    def same_length(request):
        if len(request.texts) != len(request.text_pairs):
            raise ValueError(f"give one text_pairs item for each texts item (got {len(request.texts)} texts and "
                             f"{len(request.text_pairs)} text_pairs)")
        return request

    return create_model("PredictRequest", __config__=config,
                        __validators__={"same_length": model_validator(mode="after")(same_length)},
                        texts=(text_list, Field(..., description=f"the first texts of 1 to {limit} pairs")),
                        text_pairs=(text_list, Field(..., description="the second text of each pair, as many as "
                                                                       "texts")))


def _named_numbers(model_name: str, names: list[str], lower=None, upper=None):
    """An object with one number per name (label or target), every one present: fields p0, p1, ... aliased to
    the names, since a label need not be a Python identifier."""
    from pydantic import ConfigDict, Field, create_model

    fields = {f"p{i}": (float, Field(..., alias=name, ge=lower, le=upper)) for i, name in enumerate(names)}
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


def response_model(predictor, spec: InputSpec):
    """The pydantic model of POST /predict's answer, for the schema: what the task's `records` give."""
    from typing import Literal

    from pydantic import ConfigDict, Field, create_model

    task, name = predictor.task, predictor.task.name
    fields: dict[str, Any] = {}
    if spec.kind in ("texts", "pairs"):
        fields["text"] = (str, ...)
    if spec.kind == "pairs":
        fields["text_pair"] = (str, ...)
    if name in ("text_classification", "pair_classification", "image_classification"):
        labels = Literal[tuple(predictor.labels)]
        fields.update(label=(labels, ...), score=(float, Field(..., ge=0, le=1)),
                      probabilities=(_named_numbers("Probabilities", predictor.labels, 0, 1), ...))
    elif name == "multilabel_classification":
        labels = Literal[tuple(predictor.labels)]
        fields.update(labels=(list[labels], ...),
                      probabilities=(_named_numbers("Probabilities", predictor.labels, 0, 1), ...))
    elif name == "regression":
        columns = list(task.columns)
        if len(columns) == 1:
            fields["value"] = (float, Field(..., description=f"the predicted {columns[0]}"))
        else:
            fields["values"] = (_named_numbers("Values", columns), ...)
    elif name == "token_classification":
        entity = create_model("Entity", __config__=ConfigDict(extra="forbid"), type=(str, ...),
                              start=(int, Field(..., ge=0)), end=(int, Field(..., ge=0)), text=(str, ...),
                              score=(float, Field(..., ge=0, le=1)))
        fields["entities"] = (list[entity], ...)
    else:  # a task added later: its records, undescribed
        return create_model("PredictResponse", predictions=(list[dict[str, Any]], ...))
    prediction = create_model("Prediction", __config__=ConfigDict(extra="forbid"), **fields)
    return create_model("PredictResponse", __config__=ConfigDict(extra="forbid"),
                        predictions=(list[prediction], Field(..., description="one per input, in order")))


def _static_models():
    from pydantic import BaseModel, ConfigDict, Field

    class ErrorItem(BaseModel):
        loc: list[str | int]
        msg: str
        type: str

    class Error(BaseModel):
        model_config = ConfigDict(extra="forbid")
        detail: str = Field(..., description="what is wrong and what to do")
        errors: Optional[list[ErrorItem]] = Field(None, description="each problem of a request that failed validation")

    class Health(BaseModel):
        model_config = ConfigDict(extra="forbid")
        status: str
        queued: int = Field(..., ge=0, description="inputs waiting for the model")
        running: int = Field(..., ge=0, description="inputs the model is predicting now")
        batches: int = Field(..., ge=0, description="micro-batches predicted since the start")
        predicted: int = Field(..., ge=0, description="inputs in them (predicted / batches: the mean batch)")

    class Limits(BaseModel):
        model_config = ConfigDict(extra="forbid")
        max_batch: int
        max_wait_ms: float
        queue_size: int
        max_request_bytes: int
        max_texts_per_request: int
        max_concurrency: int
        max_image_pixels: int
        body_timeout_s: float

    class Info(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: Optional[str] = Field(..., description="the model the run started from")
        task: str
        labels: list[str] = Field(..., description="class names, labels or tags, in output order")
        targets: Optional[list[str]] = Field(None, description="regression: the predicted columns")
        input: str = Field(..., description="texts, pairs or vectors")
        feature_columns: Optional[list[str]] = None
        strop_version: str
        limits: Limits

    return Error, Health, Info


# --- micro-batching ----------------------------------------------------------------------------------------------

class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Job:
    inputs: list
    future: asyncio.Future
    arrived: float


@dataclass
class MicroBatcher:
    """One asyncio worker that groups the inputs of waiting requests and runs `predict` once per group, in a
    single inference thread. `predict(inputs) -> records`, one record per input."""

    predict: Callable[[list], list]
    max_batch: int
    max_wait_s: float
    queue_size: int
    threads: Optional[int] = None
    queued: int = 0   # inputs waiting (not yet taken by the worker)
    running: int = 0  # inputs being predicted
    batches: int = 0  # model calls of the queue so far
    predicted: int = 0  # inputs in them
    seconds_per_input: float = 0.01  # moving average, for Retry-After

    async def start(self) -> None:
        self._jobs: collections.deque[_Job] = collections.deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="strop-predict",
                                            initializer=_limit_threads, initargs=(self.threads,))
        self._task = asyncio.create_task(self._work(), name="strop-batcher")

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(QueueFull(1))
        self._executor.shutdown(wait=True)

    async def run_alone(self, inputs: list) -> list:
        """`predict` in the inference thread, outside the queue (warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.predict, inputs)

    def retry_after(self) -> int:
        """Seconds until the inputs waiting now are likely done, 1 to 60."""
        return int(min(60, max(1, math.ceil((self.queued + self.running) * self.seconds_per_input))))

    async def submit(self, inputs: list) -> list:
        """The records of `inputs`, predicted with those of other requests; QueueFull where they do not fit."""
        if self.queued + len(inputs) > self.queue_size:
            raise QueueFull(self.retry_after())
        loop = asyncio.get_running_loop()
        job = _Job(inputs, loop.create_future(), loop.time())
        self._jobs.append(job)
        self.queued += len(inputs)
        self._arrived.set()
        return await job.future  # a cancelled request cancels its future; the worker skips it

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._jobs:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._jobs[0].arrived + self.max_wait_s  # the first request waits at most max_wait
            while self.queued < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            try:
                if batch:
                    await self._run(batch)
            except Exception as error:  # never leave the queue without its worker
                LOG.exception("strop serve: the batch worker failed")
                for job in batch:
                    _settle(job.future, error=error)

    def _take(self) -> list[_Job]:
        """Whole requests from the front, up to max_batch inputs (one request at least, however large)."""
        batch, count = [], 0
        while self._jobs:
            job = self._jobs[0]
            if job.future.done():  # its request was cancelled
                self._jobs.popleft()
                self.queued -= len(job.inputs)
                continue
            if batch and count + len(job.inputs) > self.max_batch:
                break
            self._jobs.popleft()
            self.queued -= len(job.inputs)
            batch.append(job)
            count += len(job.inputs)
        return batch

    async def _run(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        inputs = [x for job in batch for x in job.inputs]
        self.running = len(inputs)
        self.batches += 1
        self.predicted += len(inputs)
        started = time.perf_counter()
        try:
            records = await loop.run_in_executor(self._executor, self.predict, inputs)
            if len(records) != len(inputs):
                raise RuntimeError(f"the model gave {len(records)} predictions for {len(inputs)} inputs")
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0].future, error=error)
            else:  # one request's inputs may be the cause: each on its own, so only that one fails
                for job in batch:
                    try:
                        _settle(job.future, await loop.run_in_executor(self._executor, self.predict, job.inputs))
                    except Exception as job_error:
                        _settle(job.future, error=job_error)
        else:
            start = 0
            for job in batch:
                _settle(job.future, records[start:start + len(job.inputs)])
                start += len(job.inputs)
            per_input = (time.perf_counter() - started) / len(inputs)
            self.seconds_per_input = 0.8 * self.seconds_per_input + 0.2 * per_input
        finally:
            self.running = 0


def _settle(future: asyncio.Future, result=None, error: Optional[BaseException] = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads() -> int:
    """torch threads for serving: the CPUs this process may use (its affinity, not the host's count), less one
    for the event loop (parsing, answering), which otherwise competes with torch's thread team."""
    return max(1, _available_cpus() - 1)


def _limit_threads(threads: Optional[int]) -> None:
    """torch's intra-op threads, set in the calling thread (the inference thread, and the main one)."""
    import torch

    torch.set_num_threads(threads or default_threads())


def _not_finite(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_not_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_not_finite(v) for v in value)
    return False


# --- the ASGI guard: body size, body time and concurrency ---------------------------------------------------------

class RequestGuard:
    """Refuses a body over max_bytes with 413 (by its Content-Length before reading it, or as it streams in,
    without keeping more than max_bytes), a body not whole within body_timeout_s with 408, and a request beyond
    max_concurrency POSTs in progress with 503. The body read is handed to the app in one piece."""

    DRAIN_LIMIT = 64 << 20  # an over-long body is read and dropped up to this, so that the client sees the 413

    def __init__(self, app, max_bytes: int, max_concurrency: int, body_timeout_s: float = 30.0):
        self.app, self.max_bytes, self.max_concurrency = app, max_bytes, max_concurrency
        self.body_timeout_s = body_timeout_s
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # a client that stops sending mid-body would otherwise hold its slot, and its connection, for ever
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        length, expects_continue = None, False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return await _send_error(send, 400, "the Content-Length header is not a number")
            elif name == b"expect" and value.lower() == b"100-continue":
                expects_continue = True
        if length is not None and length > self.max_bytes:
            if not expects_continue:  # a client that waits for "100 Continue" sends nothing: nothing to drain
                await self._drain(receive, deadline, length)
            return await _send_error(send, 413, self._too_large(length))
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        if self.active >= self.max_concurrency:
            return await _send_error(send, 503, f"the server is busy ({self.active} requests in progress); "
                                                "retry in 1 s", {"retry-after": "1"})
        self.active += 1
        try:
            try:
                body = await self._read(receive, send, deadline)
            except asyncio.TimeoutError:
                return await _send_error(send, 408, f"the request body did not arrive in {self.body_timeout_s:g} s "
                                                    "(--body-timeout-s): send the whole body at once",
                                         {"connection": "close"})
            if body is None:
                return
            replayed = False

            async def replay():
                nonlocal replayed, body
                if not replayed:
                    replayed = True
                    message, body = {"type": "http.request", "body": body, "more_body": False}, b""
                    return message
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.active -= 1

    async def _read(self, receive, send, deadline: float) -> Optional[bytes]:
        """The whole body; None where the client left, or was answered 413.

        Raises:
            asyncio.TimeoutError: the body was not whole by the deadline.
        """
        chunks, size = [], 0
        while True:
            message = await _receive_by(receive, deadline)
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await self._drain(receive, deadline, None, size)
                await _send_error(send, 413, self._too_large(None))
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, length) -> str:
        size = f" ({length} bytes)" if length is not None else ""
        return (f"the request body{size} is larger than the server's limit of {self.max_bytes} bytes: send fewer "
                "or shorter inputs per request")

    async def _drain(self, receive, deadline: float, length, read: int = 0) -> None:
        if length is not None and length > self.DRAIN_LIMIT:
            return  # not worth reading: the connection is closed after the answer
        try:
            while read < self.DRAIN_LIMIT:
                message = await _receive_by(receive, deadline)
                if message["type"] != "http.request":
                    return
                read += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
        except asyncio.TimeoutError:
            return  # the 413 all the same


async def _receive_by(receive, deadline: float) -> dict:
    """The next ASGI message, or asyncio.TimeoutError once the loop's clock passes `deadline`."""
    return await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))


async def _send_error(send, status: int, detail: str, headers: Optional[dict] = None) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# --- the app ----------------------------------------------------------------------------------------------------

def _where(loc) -> str:
    """("body", "texts", 2) -> "texts[2]"."""
    parts = [p for p in loc if p != "body"] if loc and loc[0] == "body" else list(loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the body"


def _validation_detail(errors: list, spec: InputSpec) -> tuple[int, str, list]:
    """A status, one readable message and the list of problems of a failed request validation."""
    items = []
    for error in errors:
        loc = list(error.get("loc", ()))
        kind = error.get("type", "")
        msg = str(error.get("msg", ""))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if kind == "json_invalid":
            detail = error.get("ctx", {}).get("error", msg)
            return 400, f"the body is not valid JSON ({detail}): send a JSON object like {_example(spec)}", [
                {"loc": ["body"], "msg": f"invalid JSON: {detail}", "type": kind}]
        if kind == "missing" and loc == ["body"]:
            msg = "the body is empty: send a JSON object"
        elif kind == "missing" and loc and isinstance(loc[-1], int) and spec.kind == "vectors":
            msg = f"missing: each vector has {spec.num_features} numbers"
        elif kind == "extra_forbidden":
            msg = f"unknown field: this model reads {' and '.join(spec.fields)}"
        elif loc == ["body"] and kind in ("model_type", "model_attributes_type", "dict_type"):
            msg = "the body must be a JSON object, sent with Content-Type: application/json"
        items.append({"loc": [p if isinstance(p, (int, str)) else str(p) for p in loc], "msg": msg, "type": kind})
    shown = "; ".join(i["msg"] if _where(i["loc"]) == "the body" else f"{_where(i['loc'])}: {i['msg']}"
                      for i in items[:5])
    more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
    return 422, f"{shown}{more}. Send a JSON object like {_example(spec)}", items


def _example(spec: InputSpec) -> str:
    import json

    example = spec.example()
    if spec.kind == "images":
        return '{"images": ["<an image file, base64-encoded>", ...]}'
    if spec.kind == "vectors" and spec.num_features > 4:
        return '{"vectors": [[' + ", ".join(["0.0"] * 3) + f", ... ({spec.num_features} numbers)]]}}"
    return json.dumps(example)


def create_app(predictor, options: Optional[ServeOptions] = None):
    """The ASGI app serving `predictor` (what strop.load gives, or anything with its `records`, `task`,
    `labels`, `info` and `model.body.kind`)."""
    require_serve()
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from strop import __version__
    from strop.data.images import UndecodableImage

    options = options or ServeOptions()
    spec = InputSpec.of(predictor)
    Request_, Response_ = request_model(spec, options), response_model(predictor, spec)
    Error, Health, Info = _static_models()
    batcher = MicroBatcher(predictor.records, options.max_batch, options.max_wait_ms / 1000, options.queue_size,
                           options.threads)
    info = Info(model=predictor.info.get("base_model"), task=predictor.task.name, labels=predictor.labels,
                targets=list(predictor.task.columns) if predictor.task.name == "regression" else None,
                input=spec.kind, feature_columns=list(spec.feature_columns) if spec.kind == "vectors" else None,
                strop_version=__version__,
                limits={name: getattr(options, name) for name in ("max_batch", "max_wait_ms", "queue_size",
                        "max_request_bytes", "max_texts_per_request", "max_concurrency",
                        "max_image_pixels", "body_timeout_s")}).model_dump()

    @asynccontextmanager
    async def lifespan(app):
        _limit_threads(options.threads)
        await batcher.start()
        await batcher.run_alone(spec.warmup_input())  # the first call is slow: not a client's
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title=f"strop serve: {predictor.task.name}", version=__version__, lifespan=lifespan,
                  description=f"Predictions of a strop run ({predictor.task.name}, "
                              f"{predictor.info.get('base_model')}). POST /predict takes "
                              f"{' and '.join(spec.fields)}.")
    app.state.batcher, app.state.options = batcher, options
    app.state.request_model, app.state.response_model = Request_, Response_

    def error(status: int, detail: str, headers: Optional[dict] = None, errors: Optional[list] = None):
        content = {"detail": detail} if errors is None else {"detail": detail, "errors": errors}
        return JSONResponse(content, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        status, detail, items = _validation_detail(list(exc.errors()), spec)
        return error(status, detail, errors=items)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        LOG.error("strop serve: %s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, f"internal server error ({type(exc).__name__}); the server goes on serving")

    errors_doc = {
        400: {"model": Error, "description": "the body is not valid JSON"},
        408: {"model": Error, "description": f"the body did not arrive within {options.body_timeout_s:g} s"},
        413: {"model": Error, "description": f"the body is larger than {options.max_request_bytes} bytes"},
        422: {"model": Error, "description": "the body is not what the model reads (the message says why)"},
        500: {"model": Error, "description": "the model failed on this request; the server goes on serving"},
        503: {"model": Error, "description": "the queue is full: retry after Retry-After seconds",
              "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}},
    }

    async def predict(body: Request_):
        inputs = spec.inputs(body)
        try:
            records = await batcher.submit(inputs)
        except QueueFull as full:
            return error(503, f"the queue is full ({batcher.queued} inputs waiting, at most {options.queue_size}): "
                              f"retry in {full.retry_after} s", headers={"Retry-After": str(full.retry_after)})
        except UndecodableImage as bad:  # the client's file, not the model: said as a bad header is
            loc = next((["images", i] for i, data in enumerate(inputs) if data == bad.data), ["images"])
            msg = f"{bad}: {SEND_AN_IMAGE}"
            return error(422, f"{_where(loc)}: {msg}", errors=[{"loc": loc, "msg": msg, "type": "value_error"}])
        except Exception as exc:
            LOG.error("strop serve: prediction failed", exc_info=exc)
            return error(500, f"the model failed on this request ({type(exc).__name__}: {exc}); the server goes "
                              "on serving")
        bad = next((i for i, record in enumerate(records) if _not_finite(record)), None)
        if bad is not None:
            return error(422, f"{spec.fields[0]}[{bad}]: the model's output is not a finite number (features far "
                              "outside the range it was trained on?)")
        return JSONResponse({"predictions": records})

    app.post("/predict", response_model=None, summary="Predict for a batch of inputs",
             responses={200: {"model": Response_, "description": "one prediction per input, in order"},
                        **errors_doc})(predict)

    @app.get("/health", response_model=Health, summary="Liveness and queue depth")
    async def health():
        return {"status": "ok", "queued": batcher.queued, "running": batcher.running, "batches": batcher.batches,
                "predicted": batcher.predicted}

    @app.get("/info", response_model=Info, summary="The model, task, labels, strop version and limits")
    async def get_info():
        return info

    app.add_middleware(RequestGuard, max_bytes=options.max_request_bytes, max_concurrency=options.max_concurrency,
                       body_timeout_s=options.body_timeout_s)
    return app


# --- running it -------------------------------------------------------------------------------------------------

def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one).

    Raises:
        StropError: the address is in use, not this machine's, or not allowed.
    """
    if not 0 <= port <= 65535:
        raise StropError(f"--port: give a port from 0 to 65535; got {port}")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
        # Nagle's algorithm and delayed ACKs hold each response's body back by some 40 ms
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as error:
        raise StropError(f"--host {host}: not an address of this machine ({error})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise StropError(f"cannot listen on {host}:{port} ({error.strerror or error}): choose another --port "
                         "or --host") from None
    return sock


def quantized(predictor, source: str | Path):
    """The predictor with its model's linear layers in dynamic int8 (adapters folded in first), as `strop
    compress` measures it."""
    import torch

    from strop.compress import int8_form, merged_copy

    if not isinstance(predictor.model, torch.nn.Module) or Path(source).suffix == ".onnx":
        raise StropError("--int8 quantises a run's PyTorch model; an ONNX file is served as it is")
    for model_of in getattr(predictor, "members", [predictor]):  # an ensemble's: each member's model
        model_of.model = int8_form(merged_copy(model_of.model)).runs
    return predictor


def server(app, sock: socket.socket, log_level: str = "warning"):
    """A uvicorn server for `app` on a bound socket; run it with `.run(sockets=[sock])`."""
    import uvicorn

    options: ServeOptions = app.state.options
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_keep_alive=5, lifespan="on",
                            # a backstop on connections; the app's own limits answer first, in JSON
                            limit_concurrency=4 * options.max_concurrency + 64)
    return uvicorn.Server(config)


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, options: Optional[ServeOptions] = None,
          log_level: str = "warning", int8: bool = False) -> None:
    """Loads the run (a run directory, or an ONNX file that strop exported) and serves it until interrupted
    (Ctrl-C, SIGTERM). int8: its linear layers quantised to int8 first (dynamic quantisation, CPU)."""
    require_serve()
    from strop.predict import load

    options = options or ServeOptions()
    _limit_threads(options.threads)
    predictor = load(run_dir)
    if int8:
        predictor = quantized(predictor, run_dir)
    app = create_app(predictor, options)
    sock = bind(host, port)
    address = sock.getsockname()
    shown = f"[{address[0]}]" if sock.family == socket.AF_INET6 else address[0]
    print(f"strop serve: {predictor.task.name} model of {run_dir} at http://{shown}:{address[1]} "
          "(POST /predict, GET /health, GET /info, /docs); Ctrl-C stops", file=sys.stderr, flush=True)
    uv = server(app, sock, log_level)
    try:
        uv.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down gracefully: a normal stop
        print("strop serve: stopped", file=sys.stderr, flush=True)
    finally:
        sock.close()
    if not uv.started:
        raise StropError(f"the server did not start: the model of {run_dir} failed to predict (the error is above)")
