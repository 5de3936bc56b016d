"""What the command-line programs print: this project's messages, and only errors from libraries."""

from __future__ import annotations

import logging
import warnings

PROJECT_LOGGERS = ("model", "utils", "train_ds", "merge", "chat", "predict", "eval_mask")


def quiet_libraries(project_level: int = logging.WARNING) -> None:
    """Bare-line project messages at ``project_level``; transformers, bitsandbytes, DeepSpeed
    and the rest only report errors, and transformers shows no progress bars."""
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(project_level)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation notices
