"""report.html opened in a real browser: headless Chromium (Debian's `chromium`), driven over the Chrome DevTools
protocol. The page must load from its file alone, show its sections, load every image and chart, and log no
error on the console. Skipped, with the reason, only where Chromium is not installed."""

import json
import shutil
import subprocess
import time
import urllib.request

import pytest

from test_tasks import _fit

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed, so report.html is not checked in a browser: "
                "apt-get install -y chromium (as .ci/run does where apt-get is available)")


class Page:
    """One tab of a headless Chromium, spoken to over the DevTools protocol's websocket."""

    def __init__(self, browser: str, profile):
        websocket = pytest.importorskip("websocket", reason="websocket-client is in strop's test extra")
        self.process = subprocess.Popen(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1200,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = self._port()
        deadline, pages = time.time() + 30, []
        while not pages and time.time() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                pages = [t for t in json.load(answer) if t["type"] == "page"]
            time.sleep(0.1)
        self.socket = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.next_id, self.events = 0, []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def _port(self) -> int:
        """The port Chromium chose, from the line it prints: DevTools listening on ws://127.0.0.1:PORT/..."""
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.process.stderr.readline()
            if "DevTools listening on" in line:
                return int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
            if not line and self.process.poll() is not None:
                break
        self.close()
        pytest.fail("Chromium did not start its DevTools server")

    def call(self, method: str, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, seconds: float = 30) -> None:
        if any(e.get("method") == event for e in self.events):
            return
        deadline = time.time() + seconds
        while time.time() < deadline:
            message = json.loads(self.socket.recv())
            self.events.append(message)
            if message.get("method") == event:
                return
        pytest.fail(f"no {event} within {seconds} s")

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        self.call("Runtime.evaluate", expression="new Promise(r => requestAnimationFrame(() => r(1)))",
                  awaitPromise=True)  # one frame painted, and late console messages in

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"]["value"]

    def errors(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, and failed loads the browser logged."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                found.append(params["entry"]["text"])
        return found

    def close(self) -> None:
        if getattr(self, "socket", None) is not None:
            self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    opened = Page(_browser(), tmp_path_factory.mktemp("chromium-profile"))
    yield opened
    opened.close()


IMAGES = """(() => { const images = [...document.images];
  return {count: images.length, broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
          shown: images.filter(i => i.getBoundingClientRect().width > 100).length,
          resources: performance.getEntriesByType('resource').map(r => r.name),
          ids: [...document.querySelectorAll('h2[id]')].map(h => h.id), title: document.title,
          height: document.body.scrollHeight, text: document.body.innerText.length}; })()"""


@pytest.mark.parametrize("task", ["text_classification", "regression"])
def test_report_renders_in_chromium_with_its_charts_and_no_console_errors(task, page, tiny_model_dir, tmp_path):
    run, _ = _fit(task, tiny_model_dir, tmp_path)
    page.open((run / "report.html").as_uri())
    state = page.evaluate(IMAGES)
    assert page.errors() == []
    assert state["title"] == f"strop report: {run.name}"
    assert state["count"] >= 3 and state["broken"] == [] and state["shown"] == state["count"]
    assert state["resources"] == []  # nothing fetched: the file holds all it shows
    expected = {"diagnosis", "data", "curves", "worst", "config"} | (
        {"residuals", "scores"} if task == "regression" else {"confusion", "scores", "calibration"})
    assert expected <= set(state["ids"])
    assert state["height"] > 2000 and state["text"] > 1000  # laid out, not an empty or collapsed page
    shot = page.call("Page.captureScreenshot", format="png")["data"]
    assert len(shot) > 10_000


@pytest.mark.parametrize("kind", ["search", "cv", "curve"])
def test_search_cv_and_curve_reports_render_with_their_charts(kind, page, tmp_path):
    from test_report_studies import cv_folds, measured_curve, search_result

    from strop.report_studies import write_folder_report

    result = {"search": lambda: search_result([1e-5, 3e-5, 1e-4, 9e-4], [0.6, 0.7, 0.8, 0.9]), "cv": cv_folds,
              "curve": measured_curve}[kind]()
    (tmp_path / f"{kind}.json").write_text(json.dumps(result))
    report = write_folder_report(tmp_path)
    page.open(report.as_uri())
    state = page.evaluate(IMAGES)
    assert page.errors() == []
    assert state["title"] == f"strop {kind} report: " + ("s" if kind == "search" else tmp_path.name)  # the study
    assert state["count"] == {"search": 4, "cv": 1, "curve": 1}[kind]
    assert state["broken"] == [] and state["shown"] == state["count"] and state["resources"] == []
    expected = {"search": {"diagnosis", "history", "importances", "slices", "epochs", "trials"},
                "cv": {"diagnosis", "scores", "runs", "config"}, "curve": {"diagnosis", "curve", "points", "config"}}
    assert expected[kind] <= set(state["ids"])


def test_the_browser_check_sees_a_broken_image_and_a_console_error(page, tmp_path):
    """The checks above would catch a broken report: a missing image and a script error are seen."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><title>bad</title></head><body><img alt='gone' src='missing.png'>"
                   "<script>console.error('chart failed')</script></body></html>")
    page.open(bad.as_uri())
    state = page.evaluate(IMAGES)
    assert state["broken"] == ["gone"]
    assert any("chart failed" in e for e in page.errors())
