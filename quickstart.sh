#!/usr/bin/env bash
# The whole system on this machine, no GPU and no downloads needed: builds a tiny LLaVA base
# (tokenizer, LLaMA, CLIP) and a tiny SAM, makes a LISA model from them and asks it a question.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh
PY=.venv/bin/python
OUT=${QUICKSTART_DIR:-runs/quickstart}

echo "== building the tiny base in $OUT/base"
$PY -m model.tiny_base --output_dir "$OUT/base"

echo "== building LISA from it and asking a question"
$PY - "$OUT" <<'PYTHON'
import sys
from pathlib import Path

import numpy as np
import torch

from model.builder import build_lisa
from utils.conversation import build_chat_prompt
from utils.tokenization import decode_answer, load_tokenizer, tokenizer_image_token
from utils.transforms import ClipTransform, ImagePreprocessor, SamTransform

out = Path(sys.argv[1])
tokenizer = load_tokenizer(out / "base" / "llava")
model = build_lisa(str(out / "base" / "llava"), tokenizer, vision_pretrained=str(out / "base" / "sam_tiny.pth")).eval()
image = np.full((96, 128, 3), 200, dtype=np.uint8)
image[20:60, 30:70] = (220, 30, 30)
processor = ImagePreprocessor(ClipTransform.from_pretrained(out / "base" / "clip"), SamTransform(model.model.visual_model.image_size))
prepared = processor(image)
prompt = build_chat_prompt("Please segment the red square.", "llava_v1", use_mm_start_end=True)
input_ids = torch.tensor([tokenizer_image_token(prompt, tokenizer)])
output_ids, masks = model.evaluate(prepared.images_clip, prepared.images, input_ids, [prepared.resize], [prepared.original_size], max_new_tokens=12)
answer = decode_answer(output_ids[0, input_ids.shape[1]:], tokenizer, clean=True)
print(f"untrained answer: {answer!r}; masks: {[tuple(m.shape) for m in masks]}")
PYTHON
