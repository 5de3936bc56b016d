"""Token and label constants shared by the model, the data pipeline and the scripts."""

IGNORE_INDEX = -100  # label value the cross-entropy skips
IMAGE_TOKEN_INDEX = -200  # sentinel id marking where the image goes; never a vocabulary entry

DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"
SEG_TOKEN = "[SEG]"
