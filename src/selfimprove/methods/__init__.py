"""Methods: registered ways of making episodes (`methods/base.py`). Importing this package registers
the built-in methods."""

from selfimprove.methods.base import METHODS, Method, register_method

# Each import registers its method by name (see `selfimprove --help`).
from selfimprove.methods import sft as _sft  # noqa: F401,E402
from selfimprove.methods import rl as _rl  # noqa: F401,E402
from selfimprove.methods import dpo as _dpo  # noqa: F401,E402
from selfimprove.methods import warmup as _warmup  # noqa: F401,E402
from selfimprove.methods import score as _score  # noqa: F401,E402
from selfimprove.methods import star as _star  # noqa: F401,E402
from selfimprove.methods import pair_sft as _pair_sft  # noqa: F401,E402
from selfimprove.methods import rrr as _rrr  # noqa: F401,E402
from selfimprove.methods import offline as _offline  # noqa: F401,E402
from selfimprove.methods import alphallm as _alphallm  # noqa: F401,E402
from selfimprove.methods import r3 as _r3  # noqa: F401,E402

__all__ = ["METHODS", "Method", "register_method"]
