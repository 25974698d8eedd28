"""`make bench`: the server's /openapi.json against a fuzzer. schemathesis generates requests for every operation
from the schema (BENCH_EXAMPLES each, default 200), sends them to the app in this process with the bundled tiny.en,
and checks every answer: no 5xx, its status, content type and body as the schema documents them. Prints each
operation's requests by status and the failures (none expected); tests/test_schema.py runs the same with 50 each.
Writes bench/results/schema.json.
"""

from __future__ import annotations

import collections
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import stamp

EXAMPLES = int(os.environ.get("BENCH_EXAMPLES", "200"))


def main() -> None:
    warnings.simplefilter("ignore")
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from test_schema import CHECKS, fuzzed_app  # the suite's checks, on the same app

    from asrflow import load_transcriber

    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app(load_transcriber("bundled:tiny.en")))
    rows, started = [], time.perf_counter()
    for operation in (result.ok() for result in schema.get_all_operations()):
        statuses, failures = collections.Counter(), []

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers(case):
            response = case.call()
            statuses[response.status_code] += 1  # noqa: B023 - run before the loop moves on
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as e:  # noqa: BLE001 - every failure is counted, none stops the run
                failures.append(str(e).splitlines()[0])  # noqa: B023

        answers()
        name = f"{operation.method.upper()} {operation.path}"
        rows.append(
            {"operation": name, "requests": sum(statuses.values()), "statuses": dict(statuses), "failures": failures}
        )
    print(
        f"bench/schema.py, {time.strftime('%Y-%m-%d %H:%M')}, schemathesis {schemathesis.__version__ if hasattr(schemathesis, '__version__') else ''}, up to {EXAMPLES} examples an operation"
    )
    print(f"{'operation':>32} {'requests':>9} {'failures':>9}  statuses")
    for r in rows:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        print(f"{r['operation']:>32} {r['requests']:>9} {len(r['failures']):>9}  {statuses}")
    total = sum(r["requests"] for r in rows)
    print(
        f"{total} requests in {time.perf_counter() - started:.0f} s; failures: {sum(len(r['failures']) for r in rows)}"
    )
    stamp.write("schema", rows)


if __name__ == "__main__":
    main()
