"""The interactive docs (`/docs`) of `keras-cae serve`, rendered in a real browser
(Debian's chromium) without internet access."""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

import httpx
import pytest

from tests.export.serving._serving import Server


@pytest.mark.slow
def test_docs_render_every_operation_offline_in_chromium(server: Server, tmp_path: Any) -> None:
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):  # .ci/run installs it: never skip the check there.
            pytest.fail("CI must have Debian's chromium; .ci/run installs it")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    net_log = tmp_path / "net-log.json"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-features=NetworkTimeServiceQuerying",
         f"--user-data-dir={tmp_path / 'profile'}",
         f"--log-net-log={net_log}", "--virtual-time-budget=20000", "--dump-dom",
         server.url + "/docs"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    document = httpx.get(server.url + "/openapi.json", timeout=10).json()
    operations = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operations) >= 13
    for operation in operations:  # Swagger UI's element id for each rendered operation.
        assert re.search(rf'id="operations-[^"]*-{re.escape(operation)}"', dom), operation
    assert "Unable to render this definition" not in dom
    # Every URL the page asked for was on this server. (Requests Chromium makes for
    # itself, such as its update and time checks, have no origin as initiator.)
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = {
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start_job
        and "url" in event.get("params", {})
        and event["params"].get("initiator") != "not an origin"
    }
    assert server.url + "/docs/assets/swagger-ui-bundle.js" in urls, urls
    assert server.url + "/openapi.json" in urls, urls
    outside = {url for url in urls if not url.startswith(server.url + "/")}
    assert not outside, outside
