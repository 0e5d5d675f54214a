"""The math-verify worker: the program each pool process runs (`math_pool.py` starts it with `python -c`).

It answers one JSON request per line on stdin (gold, boxed answer or free text, time limit) with
`{"equal": ..., "reason": ...}` on its own copy of stdout, after math-verify parsed and compared the
two (its own timeouts off: the pool enforces ours by killing an overrunning worker). Stray prints go
to stderr, an orphaned worker exits, and a request's CPU time is capped by RLIMIT_CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from typing import Any, Mapping

MAX_TIMEOUT = 600.0
WORKER_MEMORY_BYTES = 4 * 2**30  # address-space limit of a worker (best effort, POSIX)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _compare(request: Mapping[str, Any]) -> tuple[bool, str]:
    """Parse gold and prediction with math-verify (its timeouts off) and compare them."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    gold = str(request["gold"])
    gold_parsed = parse("\\boxed{" + gold + "}", extraction_config=configs, parsing_timeout=None)
    if not gold_parsed:
        return False, f"gold answer {_short(gold)!r} is unparsable"
    if request.get("boxed") is not None:
        pred = str(request["boxed"])
        pred_parsed = parse("\\boxed{" + pred + "}", extraction_config=configs, parsing_timeout=None)
    else:  # no \boxed{}: math-verify's own search ("final answer is ...", last expression)
        pred = str(request["text"])
        pred_parsed = parse(pred, parsing_timeout=None)
    if not pred_parsed:
        return False, f"unparsable answer {_short(pred)!r}"
    if verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return True, "correct"
    return False, f"answer {_short(pred)!r} != {_short(gold)!r}"


def _limit_cpu(seconds: float) -> None:
    """Let the kernel end this worker (SIGXCPU) if one request burns `seconds` (+2) of CPU.

    The caller kills an overrunning worker anyway; this only matters for an orphan whose caller
    died mid-request while the worker is stuck in a C call that the watchdog thread cannot interrupt.
    """
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds + 2.0)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ImportError, ValueError, OSError):
        pass


def _worker_main() -> None:
    """Entry point of a worker: answer one JSON request per line on stdin until EOF."""
    protocol = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, never into the protocol
    logging.disable(logging.CRITICAL)  # math-verify warns that its timeouts are off: we know
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY or soft > WORKER_MEMORY_BYTES:
            resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, hard))
    except (ImportError, ValueError, OSError):
        pass
    parent = os.getppid()

    def watchdog() -> None:  # an orphan (the caller died mid-request) must not compute forever
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()
    import math_verify  # noqa: F401  (import before saying ready, so requests are fast)

    protocol.write(b"ready\n")
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
            _limit_cpu(float(request.get("limit", MAX_TIMEOUT)))
            equal, reason = _compare(request)
        except Exception as error:  # noqa: BLE001 (MemoryError and RecursionError included)
            equal, reason = False, f"verifier error: {type(error).__name__}"
        protocol.write(json.dumps({"equal": bool(equal), "reason": str(reason)}).encode() + b"\n")
