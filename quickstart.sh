#!/usr/bin/env bash
# The whole LISA pipeline on this machine, no GPU and no downloads: a toy dataset in every real
# format, a tiny LLaVA base and SAM built from nothing, DeepSpeed training through train_ds.py,
# validation, the LoRA/weights merge into a Hugging Face directory, predictions for the toy
# ReasonSeg val split scored by eval_mask.py, and a one-shot chat that saves the mask overlay.
#
#   bash quickstart.sh                    # the full run
#   QUICKSTART_FAST=1 bash quickstart.sh  # a few steps only (what CI runs: no score target)
#
# Outputs go under $QUICKSTART_DIR (default runs/quickstart). Every step is the command a
# researcher runs at full scale, with tiny sizes.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"
export HF_HUB_OFFLINE=1 PYTHONWARNINGS=ignore

OUT=${QUICKSTART_DIR:-runs/quickstart}
EXP=quickstart
if [ "${QUICKSTART_FAST:-0}" = "1" ]; then
  TOY="--num_train 24 --num_val 6 --num_test 2 --num_refer 12 --num_sem_seg 12"
  SCHEDULE="--epochs 1 --steps_per_epoch 4"
else
  TOY=""
  SCHEDULE="--epochs ${QUICKSTART_EPOCHS:-4} --steps_per_epoch ${QUICKSTART_STEPS:-500}"
fi
PORT=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start )) s] $*"; }

step "toy dataset -> $OUT/dataset"
python -m utils.toy_dataset --dataset_dir "$OUT/dataset" --seed 0 $TOY

step "tiny LLaVA base (tokenizer trained on the toy texts), CLIP and SAM -> $OUT/base"
python scripts/toy_corpus.py --dataset_dir "$OUT/dataset" --output "$OUT/corpus.txt"
python -m model.tiny_base --output_dir "$OUT/base" --corpus "$OUT/corpus.txt"
BASE="--version $OUT/base/llava --vision-tower $OUT/base/clip --vision_pretrained $OUT/base/sam_tiny.pth"
SAM_SIZE=256

step "training with DeepSpeed (a from-scratch model trains every weight: --trainable all)"
rm -rf "$OUT/runs/$EXP"
deepspeed --master_addr 127.0.0.1 --master_port "$PORT" train_ds.py $BASE \
  --dataset_dir "$OUT/dataset" --log_base_dir "$OUT/runs" --exp_name "$EXP" \
  --dataset "sem_seg||refer_seg||reason_seg" --sample_rates "1,1,2" --val_dataset "ReasonSeg|val" \
  --image_size $SAM_SIZE --precision fp32 --trainable all --lora_r 0 --no-gradient_checkpointing \
  --model_max_length 256 --batch_size 2 --grad_accumulation_steps 1 --workers 1 --print_freq 50 \
  --lr 0.0003 $SCHEDULE

step "consolidating the best checkpoint and merging it into a Hugging Face directory"
(cd "$OUT/runs/$EXP/ckpt_model" && python zero_to_fp32.py . ../pytorch_model.bin)
python merge_lora_weights_and_save_hf_model.py $BASE --weight "$OUT/runs/$EXP/pytorch_model.bin" \
  --save_path "$OUT/model" --lora_r 0 --precision fp32 --include_vision_tower

step "predictions for the toy ReasonSeg val split, scored by eval_mask.py"
python predict.py --version "$OUT/model" --dataset_dir "$OUT/dataset" --val_dataset "ReasonSeg|val" \
  --output_dir "$OUT/predictions" --precision fp32 --model_max_length 256
python eval_mask.py --submission_dir "$OUT/predictions" \
  --groundtruth_dir "$OUT/dataset/reason_seg/ReasonSeg/val" --output_json "$OUT/eval.json"

step "one question in chat.py (one-shot), overlay saved"
IMAGE=$(ls "$OUT"/dataset/reason_seg/ReasonSeg/val/*.jpg | head -n 1)
python chat.py --version "$OUT/model" --image_size $SAM_SIZE --precision fp32 --model_max_length 256 \
  --vis_save_path "$OUT/vis_output" --image "$IMAGE" \
  --prompt "Can you segment the largest shape in this image? Please output segmentation mask." \
  --output_json "$OUT/chat.json"

step "done"
echo "validation during training: $(cat "$OUT/runs/$EXP/best.json" | tr -d '\n ')"
echo "outputs: dataset $OUT/dataset, base $OUT/base, run (TensorBoard) $OUT/runs/$EXP,"
echo "         model $OUT/model, predictions $OUT/predictions, scores $OUT/eval.json, chat $OUT/vis_output"
