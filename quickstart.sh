#!/usr/bin/env bash
# Quick start: the whole LISA pipeline on this machine, no GPU and no downloads.
#
#   bash quickstart.sh                      # full run (README, "What the quick start reaches")
#   QUICKSTART_FAST=1 bash quickstart.sh    # a few training steps only, no score target (CI)
#   QUICKSTART_DIR=/tmp/qs bash quickstart.sh   # outputs elsewhere (default runs/quickstart)
#
# Every stage is the command a researcher runs at full scale, with toy-sized arguments:
#   1. toy dataset            python -m tools.toy_dataset (requests by colour)
#   2. tiny base              python -m tools.tiny_base (tokenizer trained on the toy texts)
#   3. naming                 deepspeed ... train_ds.py --dataset vqa: the tiny LLaVA learns to
#                             answer each ReasonSeg request with the target's name, as a LLaVA base
#                             already would; then python zero_to_fp32.py . ../pytorch_model.bin
#   4. training + validation  deepspeed ... train_ds.py --weight <3.> --trainable heads: LISA's
#                             training with the LLM frozen and one answer template
#   5. consolidation          python zero_to_fp32.py . ../pytorch_model.bin
#   6. merge                  python merge_lora_weights_and_save_hf_model.py
#   7. predictions            python predict.py
#   8. offline scores         python eval_mask.py
#   9. one-shot chat          python chat.py --prompt ... --image ...
# A second run starts from scratch: it replaces the folder an earlier run made (and no other).
set -euo pipefail
cd "$(dirname "$0")"

FAST=${QUICKSTART_FAST:-0}
OUT=${QUICKSTART_DIR:-runs/quickstart}
EXP=toy-lisa

bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"  # python and deepspeed below are the virtual environment's
export PYTHONUNBUFFERED=1
# Each process uses one thread: on 2 cores the DataLoader worker gets the other one, and one
# thread per process is also the fastest setting on a machine shared with other jobs.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# --- the preset (README, "What the quick start reaches", says why) ---
# The toy ReasonSeg asks for its targets by colour, directly or through something of that colour
# ("the colour of a banana"): a from-scratch tiny LLaVA does not learn to find a target from the
# picture on two CPU cores in minutes, but it learns to read the colour from the request.
DATA_ARGS=(--num_train 1000 --num_val 100 --num_test 10 --num_refer 200 --num_sem_seg 200
           --query_kinds colour,colour_knowledge)
# SAM at 128 px with 8 px patches (a 16 x 16 image embedding, as fine as the toy shapes need) and a
# 128-wide decoder; --out_dim follows it.
BASE_ARGS=(--sam_image_size 128 --sam_patch_size 8 --sam_prompt_embed_dim 128
           --sam_decoder_mlp_dim 512 --sam_iou_head_hidden_dim 128)
NAMING_STEPS=1000
EPOCHS=3
STEPS_PER_EPOCH=500
if [ "$FAST" = 1 ]; then
    DATA_ARGS=(--num_train 40 --num_val 8 --num_test 2 --num_refer 10 --num_sem_seg 10
               --query_kinds colour,colour_knowledge)
    NAMING_STEPS=4
    EPOCHS=1
    STEPS_PER_EPOCH=4
fi
COMMON_ARGS=(
    --image_size 128
    --out_dim 128
    --lora_r 0
    --precision fp32
    --grad_accumulation_steps 1
    --lr 0.001
    --workers 1
    --no-gradient_checkpointing
    --model_max_length 256
    --print_freq 50
)
# Stage 1, naming: every parameter trains (a from-scratch model) on the language loss alone.
NAMING_ARGS=(
    --dataset vqa --sample_rates 1 --vqa_data reason_seg_targets
    --trainable all
    --batch_size 8
    --epochs 1 --steps_per_epoch "$NAMING_STEPS"
    --no_eval
)
# Stage 2, LISA: the original's four kinds of data, weighted towards ReasonSeg. The LLM stays as
# stage 1 left it (--trainable heads: lm_head, text_hidden_fcs, SAM's decoder), and one answer
# template, so that the state predicting [SEG] is the one that learnt to name the target.
TRAIN_ARGS=(
    --dataset "sem_seg||refer_seg||vqa||reason_seg"
    --sample_rates "1,1,1,3"
    --trainable heads
    --answer_templates "[SEG]."
    --batch_size 4
    --epochs "$EPOCHS" --steps_per_epoch "$STEPS_PER_EPOCH"
)

source scripts/stages.sh
started=$(date +%s)
trap 'echo "quickstart.sh: the ${STAGE:-set-up} stage failed (exit $?); see the lines above." >&2' ERR
start_own_output "$OUT" .quickstart quickstart.sh QUICKSTART_DIR

stage "toy dataset"
python -m tools.toy_dataset --dataset_dir "$OUT/dataset" "${DATA_ARGS[@]}"

stage "tiny base"
python -m tools.toy_corpus --dataset_dir "$OUT/dataset" --output "$OUT/corpus.txt"
python -m tools.tiny_base --output_dir "$OUT/base" --corpus "$OUT/corpus.txt" "${BASE_ARGS[@]}"
BASE=$OUT/base/llava
CLIP=$OUT/base/clip
SAM=$OUT/base/sam_tiny.pth

train() {  # train EXP_NAME ARGS...: one train_ds.py run from the tiny base, on a free port
    deepspeed --master_addr 127.0.0.1 --master_port "$(free_port)" train_ds.py \
        --version="$BASE" \
        --vision-tower="$CLIP" \
        --vision_pretrained="$SAM" \
        --dataset_dir="$OUT/dataset" \
        --log_base_dir="$OUT/runs" \
        --exp_name="$1" \
        "${COMMON_ARGS[@]}" "${@:2}"
}

stage "naming"
train "$EXP-naming" "${NAMING_ARGS[@]}"
NAMED=$OUT/runs/$EXP-naming
(cd "$NAMED/ckpt_model" && python zero_to_fp32.py . ../pytorch_model.bin)

stage "training"
train "$EXP" --weight="$NAMED/pytorch_model.bin" "${TRAIN_ARGS[@]}"
RUN=$OUT/runs/$EXP

stage "consolidation"
(cd "$RUN/ckpt_model" && python zero_to_fp32.py . ../pytorch_model.bin)

stage "merge"
python merge_lora_weights_and_save_hf_model.py \
    --version="$BASE" \
    --vision-tower="$CLIP" \
    --vision_pretrained="$SAM" \
    --weight="$RUN/pytorch_model.bin" \
    --save_path="$OUT/model" \
    --out_dim 128 \
    --lora_r 0 \
    --precision fp32 \
    --include_vision_tower

stage "predictions"
python predict.py \
    --version="$OUT/model" \
    --dataset_dir="$OUT/dataset" \
    --val_dataset="ReasonSeg|val" \
    --output_dir="$OUT/predictions" \
    --precision fp32 \
    --workers 0

stage "evaluation"
python eval_mask.py \
    --submission_dir="$OUT/predictions" \
    --groundtruth_dir="$OUT/dataset/reason_seg/ReasonSeg/val" \
    --output_json="$OUT/eval.json"

stage "chat"
pick_val_request "$OUT/dataset"
python chat.py \
    --version="$OUT/model" \
    --precision fp32 \
    --max_new_tokens 32 \
    --prompt="$prompt" \
    --image="$image" \
    --vis_save_path="$OUT/vis_output" \
    --output_json="$OUT/chat.json"

stage done
total=$(( $(date +%s) - started ))
python - "$OUT" "$RUN" <<'PYTHON'
import json, sys
from pathlib import Path

out, run = Path(sys.argv[1]), Path(sys.argv[2])
best = json.loads((run / "best.json").read_text())
report = json.loads((out / "eval.json").read_text())
print(f"\nvalidation in training (best epoch {best['epoch']}): gIoU {best['giou']:.4f}  cIoU {best['ciou']:.4f}")
print(f"eval_mask.py on the toy ReasonSeg val predictions:  gIoU {report['giou']:.4f}  cIoU {report['ciou']:.4f}")
PYTHON
echo
printf '%s\n' "${TIMES[@]}"
printf '%-14s %4d s\n' total "$total"
cat <<EOF

outputs in $OUT:
  dataset/               toy dataset (python -m tools.toy_dataset)
  base/                  tiny LLaVA base (llava/), CLIP (clip/), SAM checkpoint (sam_tiny.pth)
  runs/$EXP-naming/  naming stage: TensorBoard events, checkpoints, pytorch_model.bin
  runs/$EXP/         LISA stage: TensorBoard events, ckpt_model/ (best), ckpt_latest/,
                         best.json, pytorch_model.bin
  model/                 merged Hugging Face model directory (chat.py / predict.py --version)
  predictions/           one .npy mask stack per val image (predict.py)
  eval.json              eval_mask.py report
  vis_output/            chat.py overlay and masks; chat.json: its answer

Open the web demo on this model (the toy val images are its examples), then visit
http://127.0.0.1:7860 in a browser:
  .venv/bin/python app.py --version=$OUT/model --precision fp32
EOF
