#!/usr/bin/env bash
# Learning proof for LISA on a transformers base: a tiny random Qwen2.5-VL with a tiny random
# SAM 2 learns the toy ReasonSeg on this machine's CPU, through the very scripts a researcher
# runs. It prints the toy val gIoU / cIoU at step 0 and after training.
#
#   bash scripts/learning_proof_vlm.sh                           # full run (9-12 minutes on 2 cores)
#   LEARNING_PROOF_FAST=1 bash scripts/learning_proof_vlm.sh     # a few steps only (CI)
#   LEARNING_PROOF_DIR=/tmp/lp bash scripts/learning_proof_vlm.sh    # outputs elsewhere
#
# The recipe is the quick start's (quickstart.sh says why), on the other base and segmenter:
#   1. toy dataset       python -m tools.toy_dataset, requests by colour
#   2. tiny inputs       python -m tools.tiny_qwen_sam2: Qwen2.5-VL (tokenizer trained on the
#                        toy texts) and SAM 2 at 256 px
#   3. step 0            train_ds.py --eval_only on the untrained base
#   4. naming            train_ds.py --dataset vqa --trainable all: the base learns to answer
#                        each ReasonSeg request with the target's name, as a real base already would
#   5. LISA training     train_ds.py --weight <4.> --trainable heads --answer_templates "[SEG].",
#                        validation after each epoch
#   6. the rest          zero_to_fp32.py, the merge, predict.py + eval_mask.py, chat.py one-shot
# A second run replaces the folder an earlier run made (and no other).
set -euo pipefail
cd "$(dirname "$0")/.."

FAST=${LEARNING_PROOF_FAST:-0}
OUT=${LEARNING_PROOF_DIR:-runs/learning_proof_vlm}

bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"  # python and deepspeed below are the virtual environment's
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread per process, as quickstart.sh

DATA_ARGS=(--num_train 1000 --num_val 100 --num_test 10 --num_refer 200 --num_sem_seg 200
           --query_kinds colour,colour_knowledge)
SAM2_SIDE=256  # a 16 x 16 image embedding (SAM 2's stride is 16), as fine as the toy shapes need
NAMING_STEPS=1000
EPOCHS=3
STEPS_PER_EPOCH=1500
if [ "$FAST" = 1 ]; then
    DATA_ARGS=(--num_train 40 --num_val 8 --num_test 2 --num_refer 10 --num_sem_seg 10
               --query_kinds colour,colour_knowledge)
    NAMING_STEPS=4
    EPOCHS=1
    STEPS_PER_EPOCH=4
fi
COMMON_ARGS=(
    --image_size "$SAM2_SIDE"
    --out_dim 32  # the tiny SAM 2's prompt width
    --lora_r 0
    --precision fp32
    --grad_accumulation_steps 1
    --lr 0.001
    --workers 1
    --no-gradient_checkpointing
    --model_max_length 256
    --print_freq 250
)
NAMING_ARGS=(
    --dataset vqa --sample_rates 1 --vqa_data reason_seg_targets
    --trainable all
    --batch_size 8
    --epochs 1 --steps_per_epoch "$NAMING_STEPS"
    --no_eval
)
TRAIN_ARGS=(
    --dataset "sem_seg||refer_seg||vqa||reason_seg"
    --sample_rates "1,1,1,3"
    --trainable heads
    --answer_templates "[SEG]."
    --batch_size 4
    --epochs "$EPOCHS" --steps_per_epoch "$STEPS_PER_EPOCH"
)

source scripts/stages.sh
STAGE_FORMAT='  %-32s %4d s'
trap 'echo "learning_proof_vlm.sh: the ${STAGE:-set-up} stage failed (exit $?); see the lines above." >&2' ERR
start_own_output "$OUT" .learning_proof_vlm learning_proof_vlm.sh LEARNING_PROOF_DIR
started=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

stage "toy dataset"
python -m tools.toy_dataset --dataset_dir "$OUT/dataset" "${DATA_ARGS[@]}"

stage "tiny Qwen2.5-VL and SAM 2"
python -m tools.toy_corpus --dataset_dir "$OUT/dataset" --output "$OUT/corpus.txt"
python -m tools.tiny_qwen_sam2 --output_dir "$OUT/base" --corpus "$OUT/corpus.txt" \
    --image_size "$SAM2_SIDE"

train() {  # train EXP_NAME ARGS...: one train_ds.py run from the tiny base; its output in EXP.log
    deepspeed --master_addr 127.0.0.1 --master_port "$(free_port)" train_ds.py \
        --version="$OUT/base/qwen2_5_vl" \
        --vision_pretrained="$OUT/base/sam2" \
        --dataset_dir="$OUT/dataset" \
        --log_base_dir="$OUT/runs" \
        --exp_name="$1" \
        "${COMMON_ARGS[@]}" "${@:2}" 2>&1 | tee "$OUT/$1.log" | { grep -v '^\[20' || true; }
}

stage "step 0 validation"
train step0 --eval_only

stage "naming"
train naming "${NAMING_ARGS[@]}"
(cd "$OUT/runs/naming/ckpt_model" && python zero_to_fp32.py . ../pytorch_model.bin)

stage "LISA training"
train lisa --weight="$OUT/runs/naming/pytorch_model.bin" "${TRAIN_ARGS[@]}"

stage "consolidation and merge"
(cd "$OUT/runs/lisa/ckpt_model" && python zero_to_fp32.py . ../pytorch_model.bin)
python merge_lora_weights_and_save_hf_model.py \
    --version="$OUT/base/qwen2_5_vl" \
    --vision_pretrained="$OUT/base/sam2" \
    --weight="$OUT/runs/lisa/pytorch_model.bin" \
    --save_path="$OUT/model" \
    --out_dim 32 \
    --lora_r 0 \
    --precision fp32

stage "predictions and offline scores"
python predict.py --version="$OUT/model" --dataset_dir="$OUT/dataset" --val_dataset="ReasonSeg|val" \
    --output_dir="$OUT/predictions" --precision fp32 --workers 0
python eval_mask.py --submission_dir="$OUT/predictions" \
    --groundtruth_dir="$OUT/dataset/reason_seg/ReasonSeg/val" --output_json="$OUT/eval.json"

stage "chat"
pick_val_request "$OUT/dataset"
python chat.py --version="$OUT/model" --precision fp32 --max_new_tokens 32 --prompt="$prompt" \
    --image="$image" --vis_save_path="$OUT/vis_output" --output_json="$OUT/chat.json"

stage done
total=$(( $(date +%s) - started ))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo
python - "$OUT" "$FAST" <<'PYTHON'
import json, re, sys
from pathlib import Path

out, fast = Path(sys.argv[1]), sys.argv[2] == "1"
pattern = re.compile(r"epoch (\d+): giou: ([0-9.]+), ciou: ([0-9.]+)")
rows = [("step 0", *pattern.findall((out / "step0.log").read_text())[0][1:])]
rows += [(f"after epoch {int(e) + 1}", g, c) for e, g, c in pattern.findall((out / "lisa.log").read_text())]
print("toy ReasonSeg val (train_ds.py's validation)" + (" - a few steps only, no score target" if fast else ""))
for label, giou, ciou in rows:
    print(f"  {label:<16} gIoU {float(giou):.4f}  cIoU {float(ciou):.4f}")
report = json.loads((out / "eval.json").read_text())
print(f"eval_mask.py on predict.py's files of the merged model: gIoU {report['giou']:.4f}  cIoU {report['ciou']:.4f}")
chat = json.loads((out / "chat.json").read_text())
print(f"chat.py, {chat['prompt']!r}: {chat['answer']!r}, {len(chat['masks'])} mask(s)")
PYTHON
printf '%s\n' "${TIMES[@]}"
echo "wall time ${total} s; load average (1, 5, 15 min) before: ${load_before}, after: ${load_after}"
