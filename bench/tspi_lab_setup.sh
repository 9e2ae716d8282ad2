#!/usr/bin/env bash
# Lab stand-in for the TypeScript pi 0.70.6's pod_setup.sh (its dist/scripts/pod_setup.sh), for the benchmark only.
#
# Their script cannot run in the lab: it starts with `apt update && apt install …` (no internet: "Unable to
# locate package"), pipes https://astral.sh/uv/install.sh into sh, and installs the CUDA toolkit from NVIDIA's
# apt repository. This file does the same steps in the same order where they can run offline, so their
# `pi start/list/stop` find the layout they expect (/root/venv with vllm and hf, ~/.cache/huggingface linked
# to the models path, the env exports appended to ~/.bashrc, ~/.vllm_logs). Like theirs it deletes the venv
# and the uv/vLLM caches and re-installs everything on every run, and appends to ~/.bashrc every time.
#
#   bash tspi_lab_setup.sh MODELS_PATH INDEX_URL HF_ENDPOINT HF_TOKEN PI_API_KEY
set -euo pipefail
MODELS_PATH=$1 INDEX_URL=$2 HF_ENDPOINT_URL=$3 HF_TOKEN=$4 PI_API_KEY=$5

# theirs: apt update; apt install python3-pip python3-venv git build-essential … — skipped (no internet)
# theirs: CUDA toolkit via NVIDIA's apt repo when nvcc's version differs from the driver's — skipped (no internet)

# theirs: curl -LsSf https://astral.sh/uv/install.sh | sh (every run) -> ~/.local/bin/uv
# here:   the uv wheel from the lab index, every run, into the same place
mkdir -p "$HOME/.local/bin"
python3 - "$INDEX_URL" "$HOME/.local/bin" <<'PY'
import io, os, re, sys, urllib.parse, urllib.request, zipfile
index, dest = sys.argv[1].rstrip("/") + "/uv/", sys.argv[2]
page = urllib.request.urlopen(index, timeout=30).read().decode()
href = next(h for h in re.findall(r'href="([^"#]+)', page) if "manylinux" in h and "x86_64" in h)
wheel = zipfile.ZipFile(io.BytesIO(urllib.request.urlopen(urllib.parse.urljoin(index, href), timeout=60).read()))
for name in wheel.namelist():
    if re.search(r"\.data/scripts/uvx?$", name):
        path = os.path.join(dest, name.rsplit("/", 1)[1])
        with open(path, "wb") as fh:
            fh.write(wheel.read(name))
        os.chmod(path, 0o755)
PY
export PATH="$HOME/.local/bin:$PATH"
# theirs: `uv python install 3.12` when python3.12 is missing — needs the internet; the lab uses the system 3.11

# theirs: clean slate on every run
rm -rf "$HOME/venv" "$HOME/.cache/uv" "$HOME/.cache/vllm"

# theirs: uv venv --python 3.12 --seed (--seed needs pip from the index: the lab index has none)
uv venv --python /usr/bin/python3 "$HOME/venv"
source "$HOME/venv/bin/activate"
export UV_INDEX_URL="$INDEX_URL"
# theirs (release): uv pip install vllm>=0.10.0 --torch-backend=auto (unquoted: an unpinned vllm)
uv pip install vllm --torch-backend=auto
# theirs: uv pip install huggingface-hub psutil hf_transfer (psutil and hf_transfer are not on the lab index)
uv pip install huggingface-hub
# theirs: flashinfer-python, optional
uv pip install flashinfer-python 2>/dev/null || echo "FlashInfer not available, using Flash Attention instead"

# theirs: models path, HF cache linked onto it (a real ~/.cache/huggingface is deleted)
mkdir -p "$MODELS_PATH/huggingface/hub"
rm -rf "$HOME/.cache/huggingface"
mkdir -p "$HOME/.cache"
ln -s "$MODELS_PATH/huggingface" "$HOME/.cache/huggingface"
mkdir -p "$HOME/.config/vllm" && touch "$HOME/.config/vllm/do_not_track"

# theirs: appends the environment (secrets included) to ~/.bashrc on every run; the lab adds HF_ENDPOINT and the
# engine double's zero load time, so that their `pi start` (an ssh command, which sources ~/.bashrc) sees them
cat >> "$HOME/.bashrc" <<EOF

# pi setup (lab stand-in for pi 0.70.6's pod_setup.sh)
[ -d "\$HOME/venv" ] && source "\$HOME/venv/bin/activate"
export PATH="\$HOME/.local/bin:\$PATH"
export HF_TOKEN="$HF_TOKEN"
export PI_API_KEY="$PI_API_KEY"
export HUGGING_FACE_HUB_TOKEN="$HF_TOKEN"
export HF_HUB_ENABLE_HF_TRANSFER=1
export VLLM_NO_USAGE_STATS=1
export VLLM_DO_NOT_TRACK=1
export VLLM_ALLOW_LONG_MAX_MODEL_LEN=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export HF_ENDPOINT="$HF_ENDPOINT_URL"
export PI_LAB_VLLM_LOAD_SECONDS=0
EOF
mkdir -p "$HOME/.vllm_logs"
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
