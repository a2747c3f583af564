#!/bin/sh
# Element fps with CUDA memory in and out against system memory, in one run (docs/performance.md, CUDA
# memory), and the measured cost of the two copies that CUDA memory saves.
#
# usage: tools/element-memory-bench.sh BUILD_DIR MODEL_DIR [SIZES]
#   SIZES: output sizes, default "1920x1080 3840x2160" (the input is a quarter of each side, NV12).
#   N (frames per run, default 161) and REPEAT (runs of each pipeline, alternating, default 3).
# Needs the plugin built with gstreamer-cuda-1.0 and gst-plugins-bad's cudaupload/cudadownload.
#
# Every figure is flashvsr-element-bench's steady time per frame: timed in the process on the buffers
# reaching the sink, from the first chunk after frame 33 to the last chunk the end did not flush, so model
# loading and start-up never enter it; the pipelines alternate run after run and the medians are compared.
# A queue after the source puts the source (and, for CUDA memory, the upload of the small input, which a
# decoder on the device would not need) in a thread of its own, so the element's thread is what is timed.
#   sys : videotestsrc ! NV12 WxH ! queue ! flashvsr ! NV12 (system memory) ! fakesink
#   cuda: videotestsrc ! NV12 WxH ! cudaupload ! (CUDAMemory) ! queue ! flashvsr ! NV12 (CUDAMemory) ! fakesink
# The copies: per frame, cudaupload of the input and cudadownload of the output, each the difference of
# one thread's pipeline with and without it (for the download, an output-sized frame made on the device).
set -eu
set -f
build=$1
model=$2
sizes=${3:-"1920x1080 3840x2160"}
export GST_PLUGIN_PATH="$PWD/$build/gst"
# cudaupload and cudadownload prefer system memory (passthrough first): ask for CUDA memory explicitly.
cuda="video/x-raw(memory:CUDAMemory)"
N=${N:-161}
REPEAT=${REPEAT:-3}
out=$(mktemp)

for size in $sizes; do
  ow=${size%x*}; oh=${size#*x}
  iw=$((ow / 4)); ih=$((oh / 4))
  src="videotestsrc num-buffers=$N pattern=ball ! video/x-raw,format=NV12,width=$iw,height=$ih,framerate=30/1"
  # The output-sized frame for the download is made on the device (cudascale of the uploaded input): a
  # 4K videotestsrc costs ~60 ms a frame on the CPU and its scatter would hide the copy.
  osrc="$src ! cudaupload ! $cuda ! cudascale ! $cuda,width=$ow,height=$oh"
  vsr="flashvsr model-dir=$model device=cuda"
  sink="fakesink name=sink sync=false"
  "$build/flashvsr-element-bench" --repeat "$REPEAT" \
    "sys=$src ! queue ! $vsr ! video/x-raw,format=NV12 ! $sink" \
    "cuda=$src ! cudaupload ! $cuda ! queue ! $vsr ! $cuda,format=NV12 ! $sink" \
    "up0=$src ! $sink" \
    "up=$src ! cudaupload ! $cuda ! $sink" \
    "down0=$osrc ! $sink" \
    "down=$osrc ! cudadownload ! video/x-raw,format=NV12 ! $sink" | tee "$out" >&2
  python3 - "$size" "$out" <<'EOF'
import json, sys
size, path = sys.argv[1], sys.argv[2]
med = {}
for line in open(path):
    j = json.loads(line)
    if isinstance(j.get("ms_per_frame"), dict):
        med[j["pipeline"]] = j["ms_per_frame"]
need = {"sys", "cuda", "up0", "up", "down0", "down"}
if not need <= med.keys():
    print(json.dumps({"size": size, "error": "runs failed: " + ", ".join(sorted(need - med.keys()))}))
    sys.exit(1)
m = {k: v["median"] for k, v in med.items()}
up, down = m["up"] - m["up0"], m["down"] - m["down0"]
copies = max(up, 0.0) + max(down, 0.0)
gain = m["sys"] - m["cuda"]
print(json.dumps({
    "size": size, "input": "NV12",
    "system_memory_fps": round(1000 / m["sys"], 3), "cuda_memory_fps": round(1000 / m["cuda"], 3),
    "system_memory_ms_per_frame": med["sys"], "cuda_memory_ms_per_frame": med["cuda"],
    "gain_ms_per_frame": round(gain, 3),
    "upload_ms_per_frame": round(up, 3), "download_ms_per_frame": round(down, 3),
    "copies_ms_per_frame": round(copies, 3),
    "gain_covers_copies": gain >= copies}))
EOF
done
rm -f "$out"
