"""Client CPU to validate and build one job request (`chat.completions.create`'s work before it
sends): the minimum of 7 timings of 20,000 builds, in µs per request.

    python benchmarks/request_build.py
"""

from __future__ import annotations

import timeit

from trio_sogni._request import build_llm_request

MESSAGES = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "question 17 about things"},
]
PARAMS = {"max_tokens": 100, "temperature": 0.7}
N = 20_000


def build() -> None:
    build_llm_request(
        model="m", messages=MESSAGES, stream=True, params=PARAMS, default_app_source=None
    )


def main() -> None:
    best = min(timeit.repeat(build, number=N, repeat=7))
    print(f"request build: {best / N * 1e6:.2f} µs")


if __name__ == "__main__":
    main()
