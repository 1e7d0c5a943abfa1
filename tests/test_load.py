"""Load: 20 gradio_client clients call /analyze at once on space/app.py, started as its own process
on 127.0.0.1 (tiny real models). Every request is answered within the deadline, the server's
memory stays bounded (Gradio's queue plus a concurrency limit of 2 model calls), and it keeps
serving afterwards. Bounded: 20 requests, one deadline, local only."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest
from gradio_client import Client, handle_file

from _tiny_models import REPO
from test_app import free_port, tiny_model_dirs
from test_medical_io import real_slice
from tumorlens.data import TUMOR_CLASSES

CLIENTS = 20
START_TIMEOUT_S = 300
DEADLINE_S = 480
MAX_RSS_GROWTH = 1024 * 2 ** 20  # the server may grow by at most 1 GiB under the load


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_home):
    seg, cls = tiny_model_dirs(tmp_path_factory)
    port = free_port()
    log = tmp_path_factory.mktemp("load") / "server.log"
    env = dict(os.environ, TUMORLENS_CONCURRENCY="2", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    env.pop("TUMORLENS_EXAMPLES_DATASET", None)
    cmd = [sys.executable, str(REPO / "space" / "app.py"), "--seg-model", str(seg), "--cls-model", str(cls),
           "--runtime", "torch", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    try:
        start = time.monotonic()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"space/app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - start > START_TIMEOUT_S:
                pytest.fail(f"space/app.py not up after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_twenty_clients_at_once_are_all_answered_with_bounded_memory(server):
    url, proc = server
    images = [str(real_slice(c)) for c in TUMOR_CLASSES]
    first = Client(url, verbose=False)
    assert first.predict(handle_file(images[0]), 0.5, None, api_name="/analyze")[4]["label"]  # warm-up
    server_process = psutil.Process(proc.pid)
    baseline = peak = server_process.memory_info().rss
    stop = threading.Event()

    def watch():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, server_process.memory_info().rss)
            stop.wait(0.1)

    results, errors = [None] * CLIENTS, {}
    ready = threading.Barrier(CLIENTS)

    def one(i):
        try:
            client = Client(url, verbose=False)
            ready.wait(timeout=180)  # all 20 send together
            results[i] = client.predict(handle_file(images[i % len(images)]), 0.5, None, api_name="/analyze")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors[i] = repr(exc)

    watcher = threading.Thread(target=watch, daemon=True)
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(CLIENTS)]
    watcher.start()
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, DEADLINE_S - (time.monotonic() - start)))
    elapsed = time.monotonic() - start
    stop.set()
    watcher.join()

    assert not any(t.is_alive() for t in threads), f"requests unanswered after {DEADLINE_S} s"
    assert errors == {}, errors
    for i, (overlay, mask, heat, uncertainty, label, verdict, size) in enumerate(results):
        assert label["label"] in TUMOR_CLASSES and "tumor found" in verdict.lower() and "px" in size, i
        assert os.path.isfile(overlay) and os.path.isfile(mask) and os.path.isfile(heat)
    growth = peak - baseline
    print(f"{CLIENTS} clients answered in {elapsed:.1f} s; server RSS {baseline / 2**20:.0f} MiB "
          f"-> peak {peak / 2**20:.0f} MiB (+{growth / 2**20:.0f} MiB)")
    assert growth < MAX_RSS_GROWTH, f"server memory grew by {growth / 2**20:.0f} MiB under the load"
    assert proc.poll() is None
    assert first.predict(handle_file(images[2]), 0.5, None, api_name="/analyze")[4]["label"]  # still serving
