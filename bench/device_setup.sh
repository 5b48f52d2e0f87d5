# Source this on the device tool's offline GPU machine, in the repository root:  source bench/device_setup.sh
# (bench/gpu_path.py and bench/video_speed.py also need the model configs: copy ../shared/model-configs' transformer,
# vae, scheduler and guider folders and model_index.json into the git-excluded .mc/ and carry it with .whl.)
# Installs the carried wheels (.whl: diffusers, importlib_metadata) into /tmp/site, and flash-attn-4 when its parts
# are here. flash-attn-4 needs the CuTe DSL's libraries, more than one call may carry (64 MiB), so they come in two
# parts: .fa4a (the MLIR library, xz) with one call, unpacked into /tmp/fa4ir (kept between calls on a
# warm machine), and .fa4b (the rest) with the next. Without both, the fast path uses PyTorch's default attention.
SITE=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE .whl/*.whl || return 1
IR_DIR=nvidia_cutlass_dsl/dsl_packages/cutlass/_mlir/_mlir_libs
IR=$IR_DIR/_cutlass_ir.cu13.cpython-312-x86_64-linux-gnu.so
if [ -f .fa4a/cutlass_ir_cu13.so.xz ] && [ ! -f /tmp/fa4ir/$IR ]; then
  mkdir -p /tmp/fa4ir/$IR_DIR && xz -dc .fa4a/cutlass_ir_cu13.so.xz > /tmp/fa4ir/$IR.part && mv /tmp/fa4ir/$IR.part /tmp/fa4ir/$IR
fi
export PYTHONPATH=$SITE
if [ -f /tmp/fa4ir/$IR ] && [ -f .fa4b/cu13_rest.tar.xz ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE .fa4b/*.whl \
    && tar xJf .fa4b/cu13_rest.tar.xz -C $SITE \
    && xz -dc .fa4b/cute_dsl_runtime_cu13.so.xz > $SITE/nvidia_cutlass_dsl/cu13/lib/libcute_dsl_runtime.so \
    && ln -sf /tmp/fa4ir/$IR $SITE/$IR \
    && export PYTHONPATH=$SITE:$SITE/nvidia_cutlass_dsl/dsl_packages \
    && echo "device_setup: flash-attn-4 installed"
else
  echo "device_setup: flash-attn-4 parts: /tmp/fa4ir $( [ -f /tmp/fa4ir/$IR ] && echo yes || echo no ), .fa4b $( [ -f .fa4b/cu13_rest.tar.xz ] && echo yes || echo no )"
fi
