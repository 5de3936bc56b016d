# Shell helpers of quickstart.sh and scripts/learning_proof_vlm.sh (sourced, not run).
# They need: set -euo pipefail, and python on PATH.

declare -a TIMES=()
STAGE_FORMAT=${STAGE_FORMAT:-'%-14s %4d s'}  # one line of the timing table

stage() {  # stage NAME: closes the previous stage's timer and announces the next
    local now
    now=$(date +%s)
    if [ -n "${STAGE:-}" ]; then
        TIMES+=("$(printf "$STAGE_FORMAT" "$STAGE" $((now - stage_start)))")
    fi
    STAGE=$1
    stage_start=$now
    [ "$STAGE" = done ] || echo -e "\n== $STAGE"
}

start_own_output() {  # start_own_output DIR MARKER PROGRAM VARIABLE
    # Replaces only a folder an earlier run of PROGRAM made (it holds MARKER) or an empty one.
    local dir=$1 marker=$2 program=$3 variable=$4
    if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ] && [ ! -f "$dir/$marker" ]; then
        echo "$program: $dir exists and is not this script's output; set $variable to a new or empty folder." >&2
        exit 1
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    touch "$dir/$marker"
}

free_port() {
    python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pick_val_request() {  # pick_val_request DATASET_DIR: sets image and prompt (the first val image)
    # (a glob, not "ls | head": under pipefail, ls killed by SIGPIPE would end the script)
    local images=("$1"/reason_seg/ReasonSeg/val/*.jpg)
    image=${images[0]}
    # A sentence query is asked as it is; a short one ("red shape") inside a request.
    prompt=$(python -c '
import json, sys
item = json.load(open(sys.argv[1]))
text = item["text"][0]
print(text if item["is_sentence"] else f"Please segment the {text} in this image.")
' "${image%.jpg}.json")
}
