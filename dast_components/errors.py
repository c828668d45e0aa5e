# Copyright (c) DAST bundles contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Input and environment errors, and how a process that stops on one reports it: one line, no traceback.

Every check of the package raises :class:`InputError` (a ``ValueError``; :class:`MissingFileError` is also a
``FileNotFoundError``) with a message naming the file, key or value at fault and what to do. The bundles run through
``python -m monai.bundle run ...``, whose config parser wraps such an error into ``RuntimeError: Failed to evaluate
ConfigExpression`` after a long traceback. Importing ``dast_components`` therefore installs one
``sys.excepthook`` (:func:`install_excepthook`) for every entry point at once, the bundle commands and the
``python -m dast_components...`` tools alike: when the exception that ends the process has an :class:`InputError`
anywhere in its chain of causes, the process prints

    dast_components: stopped on an input error (DAST_TRACEBACK=1 shows the traceback)
    error: <the message>

on stderr and exits with status 1. Any other exception is reported by the previous hook unchanged, and with the
environment variable ``DAST_TRACEBACK=1`` input errors get the full traceback too. The hook is only installed when
no other program (IPython, a debugger) has replaced Python's default hook.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import TracebackType

__all__ = [
    "TRACEBACK_ENV", "IncompatibleWeightsError", "InputError", "MissingFileError", "find_input_error",
    "install_excepthook",
]

#: environment variable that restores the full traceback of input errors
TRACEBACK_ENV = "DAST_TRACEBACK"


class InputError(ValueError):
    """A bad input or environment (file, config value, device); the message says which one and what to do."""


class MissingFileError(InputError, FileNotFoundError):
    """A required file (weights, architecture) does not exist; the message says how to get it."""


class IncompatibleWeightsError(InputError, RuntimeError):
    """Weights that a module refuses to load, with the reason (e.g. made by an older version of the op); a
    ``RuntimeError`` like the other ``load_state_dict`` failures."""


def find_input_error(error: BaseException | None) -> InputError | None:
    """The first :class:`InputError` in ``error`` and its chain of causes and contexts, or ``None``."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    if "Original Traceback" in text:  # re-raised by a DataLoader worker: the message is its last line
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


_Hook = Callable[[type[BaseException], BaseException, "TracebackType | None"], object]


def _report(previous: _Hook, kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """Print an uncaught input error as two lines (the message last); hand anything else to ``previous``."""
    found = find_input_error(value)
    if found is None or os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        previous(kind, value, tb)
        return
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001  a closed stdout must not hide the message
        pass
    sys.stderr.write(f"dast_components: stopped on an input error ({TRACEBACK_ENV}=1 shows the traceback)\n"
                     f"error: {_one_line(found)}\n")
    sys.stderr.flush()


def install_excepthook() -> bool:
    """Report uncaught input errors as one line (see the module docstring); called on ``import dast_components``.

    Returns:
        whether the hook is installed (False when another program already replaced ``sys.excepthook``).
    """
    current = sys.excepthook
    if getattr(current, "_dast_hook", False):
        return True
    if current is not sys.__excepthook__:
        return False

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        _report(current, kind, value, tb)

    hook._dast_hook = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return True
