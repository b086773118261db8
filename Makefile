# Two commands on a fresh machine:  `make demo` (main job on the bundled photos)  and  `make test`.
PYTHON ?= python3
OUT ?= out

.PHONY: install viewer demo test lint

# torch is pinned to the CPU wheel only when no torch is installed yet (a CUDA machine keeps its own build).
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "torch==2.13.0"
	$(PYTHON) -m pip install -q -e ".[all]"

# The browser viewer's JavaScript bundle (needs node + npm; optional: the Python package works without it).
viewer:
	cd web && npm ci --no-audit --no-fund && npm run build

demo: install
	@if command -v npm >/dev/null 2>&1; then $(MAKE) viewer; else echo "no npm: viewer.html is skipped (make viewer)"; fi
	glimpse3d run examples/images --out $(OUT)

test: install
	$(PYTHON) -m pytest

lint:
	ruff check .
