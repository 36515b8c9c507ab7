"""Property-based fuzzing of every route in /openapi.json (schemathesis generates requests from each
route's request model, valid ones and invalid ones) against a real `codegemma serve`: no response
is a 500, every response comes within a deadline, and the server is alive and serving afterwards.

Bounded: a few examples per route and mode, a small context (so any accepted generation is short),
no shrinking; about a minute on two cores. FUZZ_EXAMPLES=N widens it for a longer local run.
"""

from __future__ import annotations

import os

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
import requests  # noqa: E402  (schemathesis calls through it)
from schemathesis import GenerationMode  # noqa: E402

from tests.serve.conftest import _start, wait_idle  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))  # per route and mode
DEADLINE_S = 60.0  # any single response (the server is shared with other work on a small machine)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, model_dir):
    s = _start(tmp_path_factory, model_dir, "fuzz", "--max-seq-len", "64", "--max-slots", "2", "--max-queue", "8")
    yield s
    s.stop()


def _operations(url: str):
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_no_route_answers_500_or_hangs(fuzz_server):
    operations = _operations(fuzz_server.url)
    assert len(operations) >= 20, [op.label for op in operations]
    failures: list[str] = []
    statuses: dict[int, int] = {}
    session = requests.Session()

    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def fuzz(case):
                try:
                    response = case.call(base_url=fuzz_server.url, session=session, timeout=DEADLINE_S)
                except Exception as exc:  # a hang (timeout) or a dropped connection: both are failures
                    failures.append(f"{op.label} ({mode.value}): {type(exc).__name__}: {exc}")
                    return
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code >= 500:
                    failures.append(f"{op.label} ({mode.value}): {response.status_code} {response.text[:300]}")

            try:
                fuzz()
            except Unsatisfiable:  # nothing to get wrong (a GET without parameters, in negative mode)
                pass
    print('STATUSES', statuses, len(operations))
    fuzz_server.assert_alive()
    assert not failures, "\n".join(failures[:20])
    assert statuses.get(200, 0) >= len(operations), statuses  # valid requests were generated, and served
    with httpx.Client(base_url=fuzz_server.url, timeout=60) as c:
        assert c.get("/health").status_code == 200
        wait_idle(c)
        r = c.post("/infill", json={"input_prefix": "def f():\n    ", "input_suffix": "\n", "n_predict": 4})
        assert r.status_code == 200 and r.json()["tokens_predicted"] >= 1
