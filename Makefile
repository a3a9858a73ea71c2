# Set-up and common tasks. `make quickstart` and `make test` work on a fresh machine:
# they create .venv (installing torch==2.13.0 only when no torch is importable) and
# install this package in editable mode, which builds the C++ extension from csrc/
# (rebuilt when a csrc/ file changes), before doing their job.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
OUT ?= runs/quickstart

.PHONY: venv quickstart test lint clean realdata evidence

venv: $(VENV)/.installed

CSRC := $(wildcard csrc/*.h csrc/*.cpp csrc/*/*.h csrc/*/*.cuh csrc/*/*.cpp csrc/*/*.cu)

$(VENV)/.installed: pyproject.toml setup.py $(CSRC)
	test -x $(VPY) || $(PY) -m venv --system-site-packages $(VENV)
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install "torch==2.13.0"
	$(VPY) -m pip install --no-build-isolation -e ".[test,dali,eval,tensorboard,wandb]"
	# FID's Inception-V3: torch-fidelity's network. Its metadata asks for torchvision, which
	# would pull another torch; the Inception module needs only torch (arcdae_fast/eval/fid.py)
	$(VPY) -m pip install --no-deps "torch-fidelity==0.4.0"
	touch $@

quickstart: venv
	$(VPY) -m arcdae_fast.train --config quickstart.yaml --out $(OUT)

# two pytest-xdist workers (one core each): the compile-bound tests are single-threaded
# Python; tests marked xdist_group run on one worker (they share Inductor's FX graph cache)
TEST_WORKERS ?= 2

test: venv
	$(VPY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=30 tests

# real photographs for the method table (bench/method_table.py): Fashion-MNIST's original IDX
# files from Debian's package dataset-fashion-mnist (Expat licence), installed with apt where
# this is root on Debian/Ubuntu; otherwise the exact instructions. Does nothing when present.
FMNIST := /usr/share/datasets/fashion-mnist
realdata:
	@if [ -f $(FMNIST)/t10k-labels-idx1-ubyte.gz ]; then 		echo "Fashion-MNIST is in $(FMNIST) (data.dataset=fashion_mnist reads it there)"; 	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then 		apt-get install -y dataset-fashion-mnist || 		{ apt-get update && apt-get install -y dataset-fashion-mnist; }; 	else 		echo "Fashion-MNIST is not installed. On Debian/Ubuntu: sudo apt-get install" 			"dataset-fashion-mnist (its IDX files go to $(FMNIST)). Elsewhere: put" 			"train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and" 			"t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist in a" 			"folder and pass data.root=FOLDER."; 		exit 1; 	fi

# what train.step=auto and the ops' auto read on this machine's device class
# (arcdae_fast/evidence.json): the fused ops against their reference (minutes) and every
# method's compiled step against the eager one (step agreement, 3 draws: ~25 min on 2 cores)
evidence: venv
	$(VPY) bench/op_evidence.py --record
	$(VPY) bench/step_agreement.py --record

lint: venv
	$(VPY) -m pip install -q ruff && $(VPY) -m ruff check . && $(VPY) -m ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info
