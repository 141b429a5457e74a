#!/usr/bin/env bash
# A real OpenAI-compatible judge server for checking radsteer's judge protocol handling: llama.cpp's
# server (llama-cpp-python[server]) serving the bundled SmolLM2-135M-Instruct GGUF on 127.0.0.1.
# The model is far too small to judge reports; it is here to answer as llama.cpp answers (HTTP 500
# for response_format json_schema, json_object accepted, invalid answers from a small model).
#
#   bash scripts/judge-server.sh [PORT]          # install if needed, then serve (default port 8765)
#   bash scripts/judge-server.sh --install-only  # build and install llama-cpp-python[server] only
#   radsteer label pairs.jsonl -o out.jsonl --judge-base-url http://127.0.0.1:8765/v1 \
#       --judge-model smollm2 --judge-api-key-env none
#
# llama-cpp-python is built from source (tens of minutes on 2 cores). Without these CMAKE_ARGS the
# build targets the build machine's newest instructions and crashes with "Illegal instruction" on
# CPUs without AVX-512/AMX.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
if ! "$py" -c "import llama_cpp.server.app" >/dev/null 2>&1; then
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
        nice -n 10 "$py" -m pip install -q "llama-cpp-python[server]==0.3.36"
fi
if [ "${1:-}" = "--install-only" ]; then exit 0; fi
port="${1:-8765}"
gguf="$(PYTHONPATH="$PWD" "$py" -c 'from steering.demo_model import gguf_path; print(gguf_path())')"
echo "llama.cpp server: http://127.0.0.1:$port/v1 (model alias smollm2, $gguf); Ctrl-C stops it" >&2
exec "$py" -m llama_cpp.server --model "$gguf" --model_alias smollm2 --host 127.0.0.1 --port "$port" \
    --n_ctx 4096 --n_threads "${LLAMA_THREADS:-2}"
