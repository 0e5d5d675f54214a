"""The errors a user can fix. Each carries one line that names the file or field and the fix; the CLI
prints it and exits with code 2 before anything is written (`cli.main`). A `RunFailure` is a known way
for a run to fail past one process (a rollout pool that cannot recover, data-parallel ranks that
disagree): one line saying what failed and a log file, exit 1. Anything else is a bug or an accident of
the machine: it ends with one line and the path of a log file holding the traceback.

They sit at the bottom of the layers so every part (tasks reading data, engines checking a model
folder, the driver checking its run folder) can raise them.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's inputs: one line (`str(err)`), exit code 2."""

    kind = "error"


class ConfigError(UserError, ValueError):
    """A recipe problem; each line of the message names a field."""

    kind = "config error"


class DataError(UserError, ValueError):
    """A data file problem: names the file (and the line or record) and what to change."""

    kind = "data error"


class ModelError(UserError, ValueError):
    """A model folder problem (config, weights, tokenizer, chat template, device)."""

    kind = "model error"


class RunDirError(UserError):
    """The run folder cannot be used: not writable, a file, locked by another run, or made by another recipe."""

    kind = "run_dir error"


class DiskFullError(UserError, OSError):
    """The disk filled up while writing; rerunning the same command resumes (old checkpoints are pruned
    first)."""

    kind = "disk full"


class RewardError(UserError):
    """Every call of the user's reward functions failed on a batch: the run stops (after a checkpoint)
    with one line, exit 2; the CLI writes the function's traceback to a log file."""

    kind = "reward function error"
    log_traceback = True  # the line names the log file holding the reward function's traceback
    checkpoint_first = True  # the driver saves the last finished step before it stops


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption): handled like Ctrl-C, after the driver wrote a checkpoint."""


class RunFailure(RuntimeError):
    """A run that cannot go on for a reason outside the user's inputs (one line; the CLI adds a log)."""

    kind = "run failed"


class PoolError(RunFailure):
    """The Ray rollout pool could not complete a call (a worker kept dying or hanging, or failed inside)."""

    kind = "rollout pool failed"


class RanksDisagree(RunFailure):
    """Data-parallel ranks hold different batches."""

    kind = "data-parallel ranks disagree"
