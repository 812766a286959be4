#!/usr/bin/env bash
# The distillation recipe in one call on a lent GPU (docs/model.md, "Training
# on a GPU"): optional masked-LM pretraining, teachers (one per seed, trained
# side by side on the one GPU), their averaged labels on the unlabeled notes,
# and the student, int8 model and dev scores included. Run from the repo root
# with .gpu/ carried (python scripts/gpu_pack.py pack && ... aside first).
#
# It writes to $OUT only what the device tool returns (8 files, 16 MiB each),
# each as soon as it exists, so a call cut off at its limit still returns the
# stages it finished: gpu_distill.log (all along), teachers.tar.gz (every
# teacher's model card and the ensemble's dev scores), then tagger.int8.onnx in
# 15 MiB parts and model.tar.gz (the rest of the student's model directory).
# `python scripts/gpu_pack.py unpack FILES_AT DIR` rebuilds the model.
#
# Settings (environment): TEACHER_SEEDS ("13 14 15"), EPOCHS (36),
# PSEUDO_EPOCHS (1), PRETRAIN_EPOCHS (0: none), STUDENT_NOTES ("dev": the
# 80-note split, scored on dev; "all": every note, the shipping candidate),
# KIWI_GPU_ARGS (extra train arguments for every run, e.g. "--max-notes 4"
# for a dry run), STUDENT_ARGS (extra arguments of the student alone, e.g.
# "--soft-relations"), KIWI_GPU_PSEUDO_NOTES (all), KIWI_GPU_WORK (/tmp/kiwi-gpu).
set -euo pipefail
: "${OUT:?set OUT: the folder whose files come back}"
PACK=${KIWI_GPU_PACK:-.gpu}
W=${KIWI_GPU_WORK:-/tmp/kiwi-gpu}
SEEDS=${TEACHER_SEEDS:-13 14 15}
EPOCHS=${EPOCHS:-36}
PSEUDO_EPOCHS=${PSEUDO_EPOCHS:-1}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-0}
STUDENT_NOTES=${STUDENT_NOTES:-dev}
read -r -a EXTRA <<< "${KIWI_GPU_ARGS:-}"
read -r -a STUDENT_EXTRA <<< "${STUDENT_ARGS:-}"
PSEUDO_LIMIT=()
[ -n "${KIWI_GPU_PSEUDO_NOTES:-}" ] && PSEUDO_LIMIT=(--pseudo-notes "$KIWI_GPU_PSEUDO_NOTES")

mkdir -p "$W" "$OUT"
exec > >(tee "$OUT/gpu_distill.log") 2>&1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$W/site" "$PACK"/whl/*.whl
export PYTHONPATH="$PWD:$W/site" PYTHONUNBUFFERED=1
tar -xzf "$PACK/notes.tar.gz" -C "$W"
python3 -c 'import torch; print("torch", torch.__version__, "cuda:", torch.cuda.is_available())'
kiwi() { python3 -m kiwi_fhir "$@"; }
ENC=$PACK/encoder
DATA=$W/train

if [ "$PRETRAIN_EPOCHS" != 0 ]; then
    stamp "pretraining $PRETRAIN_EPOCHS epochs"
    kiwi train --data "$DATA" --out "$W/pretrain" --encoder "$ENC" "${EXTRA[@]}" \
        --pretrain-data "$W/unlabeled" --pretrain-epochs "$PRETRAIN_EPOCHS" \
        --pretrain-dir "$W/adapted" --pretrain-only
    ENC=$W/adapted
fi

stamp "teachers: seeds $SEEDS"
TEACHERS=() pids=()
for s in $SEEDS; do
    TEACHERS+=("$W/teacher-s$s")
    KIWI_FHIR_TRAIN_THREADS=4 kiwi train --data "$DATA" --out "$W/teacher-s$s" \
        --encoder "$ENC" --epochs "$EPOCHS" --seed "$s" --no-quantize "${EXTRA[@]}" \
        > "$W/teacher-s$s.log" 2>&1 &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { tail -20 "${TEACHERS[$i]}.log"; exit 1; }
done
LIST=$(IFS=,; echo "${TEACHERS[*]}")
stamp "ensemble on dev"
mkdir -p "$W/back/teachers"
python3 -m kiwi_fhir.training.distill "$LIST" --data "$DATA" | tee "$W/back/ensemble.json"
for t in "${TEACHERS[@]}"; do cp "$t/model_card.json" "$W/back/teachers/$(basename "$t").json"; done
tar -czf "$OUT/teachers.tar.gz" -C "$W/back" .

stamp "student ($STUDENT_NOTES notes)"
SPLIT=()
[ "$STUDENT_NOTES" = all ] && SPLIT=(--all-notes)
KIWI_FHIR_TRAIN_THREADS=16 kiwi train --data "$DATA" --out "$W/student" --encoder "$ENC" \
    --epochs "$EPOCHS" "${SPLIT[@]}" --pseudo-data "$W/unlabeled" \
    --pseudo-epochs "$PSEUDO_EPOCHS" "${PSEUDO_LIMIT[@]}" --distill-teachers "$LIST" \
    "${EXTRA[@]}" "${STUDENT_EXTRA[@]}"
stamp "done; packing \$OUT"

S=$W/student
split -b 15M -d "$S/tagger.int8.onnx" "$OUT/tagger.int8.onnx.part"
mkdir -p "$W/model"
for f in config.json model_card.json tokenizer.json relation.onnx drug_lexicon.txt.gz \
         problem_lexicon.txt.gz; do
    if [ -f "$S/$f" ]; then cp "$S/$f" "$W/model/"; fi
done
tar -czf "$OUT/model.tar.gz" -C "$W/model" .
ls -l "$OUT"
