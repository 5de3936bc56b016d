"""The tiny random LISA configuration of the model tests (defined in tools.tiny_configs)."""

from tools.tiny_configs import TINY_SEG_ID as SEG_ID
from tools.tiny_configs import tiny_lisa_config as tiny_config

__all__ = ["SEG_ID", "tiny_config"]
