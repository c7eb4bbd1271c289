"""The two roles one set of weights plays, told apart only by the prompt.

Free of third-party imports, so the learner's batching (and benchmarks/gpu_smoke.py on a machine
without pyarrow) can use it."""

from typing import Literal

Role = Literal["solver", "extractor"]
ROLES: tuple[Role, ...] = ("solver", "extractor")
