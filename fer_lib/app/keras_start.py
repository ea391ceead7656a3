"""Starting Keras in this process (fer-study predict, a tuning trial) without TensorFlow's start-up lines on the
terminal (the notebooks' kernels are other processes: the runner sends their output to the run's logs/)."""

from __future__ import annotations

import os
import sys
import tempfile

from fer_lib.app.provenance import BackendUnavailable, keras_backend


def import_keras_quietly() -> str:
    """Import Keras (so its backend) with file descriptor 2 caught and return what was written there, for the
    caller's log: TensorFlow 2.21's C++ start-up lines go straight to it whatever TF_CPP_MIN_LOG_LEVEL says. A failed
    import is a BackendUnavailable with the caught text's last lines."""
    if "keras" in sys.modules:
        return ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import keras  # noqa: F401 - imported for its side effect: the backend starts here
            error: BaseException | None = None
        except Exception as failure:  # noqa: BLE001 - reported below with what the import printed
            error = failure
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        text = caught.read().decode(errors="replace")
    if error is not None:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise BackendUnavailable(f"Keras could not start its backend {keras_backend()!r}: {type(error).__name__}: "
                                 f"{error}" + (f" (it printed: {tail})" if tail else ""))
    return text
