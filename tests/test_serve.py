"""restore serve (restore.serve): the HTTP API on FastAPI's TestClient, batching of concurrent
requests, limits and errors, and the real server (uvicorn) as a process: SIGTERM, the page in a
headless browser where one is installed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

import restore  # noqa: E402
from restore.corrupt import corrupt  # noqa: E402
from restore.serve import create_app  # noqa: E402
from restore.spans import inserted_share  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def pipeline(quick_model_dir):
    return restore.load(quick_model_dir, device="cpu")


@pytest.fixture(scope="module")
def texts(wiki_texts) -> list[str]:
    return [corrupt(text) for text in wiki_texts[:6]] + ["", "born 1879 .\nleft russia 1929 ."]


def alone(pipeline, text: str) -> dict:
    """What restoring ``text`` on its own gives (what every response must equal)."""
    return pipeline(text).as_dict()


def test_one_text_and_a_list_answer_what_restoring_each_alone_gives(pipeline, texts, one_thread):
    with TestClient(create_app(pipeline)) as client:
        one = client.post("/restore", json={"text": texts[0]})
        assert one.status_code == 200
        assert one.json() == {**alone(pipeline, texts[0]), "engine": pipeline.engine}
        many = client.post("/restore", json={"texts": texts})
        assert many.status_code == 200
        expected = [alone(pipeline, text) for text in texts]
        body = many.json()
        assert body["engine"] == pipeline.engine
        for name in ("restored", "faithful", "tokens", "spans", "chunks"):
            assert body[name] == [e[name] for e in expected], name
        assert client.post("/restore", json={"texts": []}).json()["restored"] == []
        health = client.get("/health").json()
        assert health.pop("busy_seconds") > 0  # the time spent restoring
        assert health == {"status": "ok", "model": str(pipeline.path), "engine": pipeline.engine, "requests": 2,
                          "texts": 1 + len(texts), "batches": 2, "in_flight": 0}  # fmt: skip


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(pipeline, texts, one_thread):
    # Only texts with words: an empty one adds nothing to the budget, so arriving last it would
    # (rightly) be left for the next batch, and the batch sizes would depend on thread order.
    texts = [text for text in texts if text.split()]
    words = sum(len(text.split()) for text in texts)
    # A long window and a budget of exactly all requests' words: the batch closes when the last one arrives.
    app = create_app(pipeline, window_ms=60_000, batch_words=words)
    answers: dict[int, dict] = {}
    with TestClient(app) as client:

        def post(k: int) -> None:
            answers[k] = client.post("/restore", json={"text": texts[k]}).json()

        threads = [threading.Thread(target=post, args=(k,)) for k in range(len(texts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        batcher = app.state.batcher
        assert batcher.batch_sizes == [len(texts)]  # one batch held every request
        assert batcher.requests == len(texts) and batcher.in_flight == 0
    for k, text in enumerate(texts):
        assert answers[k] == {**alone(pipeline, text), "engine": pipeline.engine}


def test_a_batch_over_the_word_budget_is_split(pipeline, texts, one_thread):
    app = create_app(pipeline, window_ms=60_000, batch_words=1)  # every request is over the budget alone
    with TestClient(app) as client:
        for text in texts[:3]:
            assert client.post("/restore", json={"text": text}).status_code == 200
    assert app.state.batcher.batch_sizes == [1, 1, 1]


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b'{"text": ', 400, "malformed JSON: "),
        (b"\xff\xfe", 400, "malformed JSON: "),
        (b'["born 1879 ."]', 400, 'expected a JSON object {"text": "..."} or {"texts": ["...", ...]}'),
        (b'{"text": "a", "texts": ["b"]}', 400, "expected a JSON object"),
        (b'{"texts": ["a", 2]}', 400, "expected a JSON object"),
        (b'{"text": "' + b"x" * 300 + b'"}', 413, "request body of 312 bytes is over the limit of 256"),
        (b'{"texts": ["a", "' + b"y" * 120 + b'"]}', 413, "texts[1] has 120 characters, over the limit of 100"),
    ],
)
def test_bad_requests_are_one_line_json_errors(pipeline, body, status, message):
    with TestClient(create_app(pipeline, max_request_bytes=256, max_text_chars=100)) as client:
        response = client.post("/restore", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == status
        error = response.json()["error"]
        assert error.startswith(message) and "\n" not in error
        assert client.get("/nowhere").json() == {"error": "Not Found"}
        assert client.get("/restore").status_code == 405


def test_a_model_error_is_500_for_its_own_request_only(pipeline, texts, monkeypatch, one_thread):
    """A failing batch is answered request by request: only the request that fails alone gets 500."""
    generator = pipeline.restorer.generator
    generate = generator.generate
    poison = pipeline.restorer.encode(["explod"])[0][:-1]  # the ids of a word that breaks this "model"

    def failing(batch, *args, **kwargs):
        if any(poison == ids[: len(poison)] for ids in batch):
            raise RuntimeError("the model broke\nsecond line")
        return generate(batch, *args, **kwargs)

    monkeypatch.setattr(generator, "generate", failing)
    app = create_app(pipeline, window_ms=60_000, batch_words=sum(len(t.split()) for t in texts[:2]) + 2)  # + "explod ."
    answers = {}
    with TestClient(app) as client:

        def post(k: int, text: str) -> None:
            answers[k] = client.post("/restore", json={"text": text})

        threads = [threading.Thread(target=post, args=(0, texts[0])), threading.Thread(target=post, args=(1, texts[1])),
                   threading.Thread(target=post, args=(2, "explod ."))]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert app.state.batcher.batch_sizes[0] == 3  # together first, then each alone
    assert answers[2].status_code == 500
    assert answers[2].json() == {"error": "restoring failed: RuntimeError: the model broke"}
    monkeypatch.setattr(generator, "generate", generate)
    for k in (0, 1):
        assert answers[k].status_code == 200 and answers[k].json()["restored"] == alone(pipeline, texts[k])["restored"]


def test_the_page_is_served_and_talks_to_the_api(pipeline):
    with TestClient(create_app(pipeline)) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'fetch("/restore"' in page.text and "inserted" in page.text


# --- the real server, as a process ---------------------------------------------------------------------
def start_server(model: Path, *argv: str) -> tuple[subprocess.Popen, str]:
    """``restore serve --port 0`` (a free port) as a process; its URL once it listens."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "restore", "serve", "--model", str(model), "--device", "cpu", "--port", "0", *argv],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    line = process.stderr.readline()
    match = re.match(r"restore serve: (http://\S+/) ", line)
    if not match:
        process.kill()
        pytest.fail(f"the server did not start: {line}{process.stderr.read()}")
    return process, match.group(1)


def post(url: str, payload: dict, timeout: float = 120) -> tuple[int, dict]:
    import httpx

    response = httpx.post(url + "restore", json=payload, timeout=timeout)
    return response.status_code, response.json()


def test_the_server_binds_loopback_and_finishes_requests_in_flight_on_sigterm(quick_model_dir, pipeline, wiki_texts, one_thread):
    import httpx

    process, url = start_server(quick_model_dir)
    try:
        assert url.startswith("http://127.0.0.1:")  # the default host
        big = " ".join(corrupt(text) for text in wiki_texts) * 2  # a request that takes a while
        answer: dict = {}
        thread = threading.Thread(target=lambda: answer.update(zip(("status", "body"), post(url, {"text": big}))))
        thread.start()
        deadline = time.monotonic() + 120
        while httpx.get(url + "health").json()["in_flight"] == 0:  # the request is in the server's hands
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        thread.join(timeout=300)
        assert answer["status"] == 200 and answer["body"]["restored"] == pipeline(big).text
        assert process.wait(timeout=60) == 143  # like every command stopped by SIGTERM
        err = process.stderr.read()
        assert err == "restore serve: stopped after 1 request (1 text, 1 batch)\nrestore serve: terminated\n"
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "health")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_port_in_use_is_one_line_before_the_model_loads(quick_model_dir, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "restore", "serve", "--model", str(quick_model_dir), "--port", str(port)],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
        )  # fmt: skip
    assert result.returncode == 1
    assert re.fullmatch(rf"restore serve: error: cannot listen on 127\.0\.0\.1:{port}: .+\n", result.stderr)
    missing = subprocess.run([sys.executable, "-m", "restore", "serve", "--model", str(tmp_path / "none")],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)  # fmt: skip
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "model directory does not exist" in missing.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")
def test_the_page_in_a_headless_browser_shows_inserted_words_apart(quick_model_dir, pipeline, one_thread):
    process, url = start_server(quick_model_dir)
    source = "leon trotski born 1879 kherson provinc ."
    try:
        with tempfile.TemporaryDirectory() as profile:
            dom = subprocess.run(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--dump-dom",
                 url + "?text=" + urllib.parse.quote(source)],
                capture_output=True, text=True, timeout=120,
            ).stdout  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=60)
    output = re.search(r'<div id="output">(.*?)</div>', dom, re.S).group(1)
    words = re.findall(r'<span class="(restored|inserted)" title="([^"]*)">([^<]*)</span>', output)
    expected = pipeline(source)
    tokens = source.split()
    assert [text for _, _, text in words] == [span.text for span in expected.spans]
    for (kind, title, _), span in zip(words, expected.spans):
        if span.inserted:
            assert (kind, title) == ("inserted", "inserted")
        else:  # the word's input token on hover
            assert (kind, title) == ("restored", f"input token {span.source}: {tokens[span.source]}")
    assert re.sub(r"<[^>]+>", "", output) == expected.text
    meta = re.search(r'<div id="meta">([^<]*)</div>', dom).group(1)
    inserted, words = inserted_share(expected.spans)  # punctuation is not counted
    assert meta.startswith(f"{words} words, {inserted} inserted; faithful (") and meta.endswith(pipeline.engine)


def test_the_load_test_script_checks_every_response(quick_model_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_serve.py"), "--model", str(quick_model_dir), "--clients", "3",
         "--requests", "2", "--", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.startswith("machine: ") and "| one at a time | 6 |" in out and "| 3 concurrent clients | 6 |" in out
    assert "checked: 6 concurrent responses against restoring each text alone: 0 lost, 0 answering another request, 0 different" in out
    assert "server: exit status 143; restore serve: stopped after 13 requests (13 texts, " in out  # 1 warm-up + 2 x 6
