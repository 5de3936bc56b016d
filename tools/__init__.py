"""Programs that make things for training and trying the model, not imported by it.

- ``python -m tools.toy_dataset``: a small synthetic dataset tree in the original formats.
- ``python -m tools.toy_corpus``: the texts of a toy tree, for the tiny tokenizer.
- ``python -m tools.tiny_base``: a tiny LLaVA base and SAM checkpoint in the real on-disk formats.
"""
