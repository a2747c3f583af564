#!/bin/sh
# Element fps with CUDA memory in and out against system memory, in one run (docs/performance.md, CUDA
# memory), and the measured cost of the two copies that CUDA memory saves.
#
# usage: tools/element-memory-bench.sh BUILD_DIR MODEL_DIR [SIZES]
#   SIZES: output sizes, default "1920x1080 3840x2160" (the input is a quarter of each side, NV12).
# Needs the plugin built with gstreamer-cuda-1.0 and gst-plugins-bad's cudaupload/cudadownload.
#
# Each figure is a difference of two runs (N1 and N2 frames) so that start-up (model load, the first
# chunk, the pipeline) cancels out: fps = (N2 - N1) / (t2 - t1). A queue after the source puts the
# source (and, for CUDA memory, the upload of the small input, which a decoder on the device would not
# need) in a thread of its own, so the element's thread is what is timed.
#   sys : videotestsrc ! NV12 WxH ! queue ! flashvsr ! NV12 (system memory) ! fakesink
#   cuda: videotestsrc ! NV12 WxH ! cudaupload ! (CUDAMemory) ! queue ! flashvsr ! NV12 (CUDAMemory) ! fakesink
# The copies: per frame, cudaupload of the input and cudadownload of the output, each the difference of
# one thread's pipeline with and without it (for the download, the frame made on the device by cudaupload).
set -eu
set -f
build=$1
model=$2
sizes=${3:-"1920x1080 3840x2160"}
export GST_PLUGIN_PATH="$PWD/$build/gst"
# cudaupload and cudadownload prefer system memory (passthrough first): ask for CUDA memory explicitly.
cuda="video/x-raw(memory:CUDAMemory)"
N1=${N1:-33}
N2=${N2:-129}

seconds() {  # the wall time of one gst-launch line
  s=$(date +%s.%N)
  gst-launch-1.0 -q "$@" >/dev/null
  e=$(date +%s.%N)
  python3 -c "print($e - $s)"
}

per_frame_ms() {  # the ms per frame of a pipeline with @N@ for num-buffers, from N1 and N2 frames
  t1=$(seconds $(echo "$@" | sed "s/@N@/$N1/"))
  t2=$(seconds $(echo "$@" | sed "s/@N@/$N2/"))
  python3 -c "print(round(1000 * ($t2 - $t1) / ($N2 - $N1), 3))"
}

for size in $sizes; do
  ow=${size%x*}; oh=${size#*x}
  iw=$((ow / 4)); ih=$((oh / 4))
  src="videotestsrc num-buffers=@N@ pattern=ball ! video/x-raw,format=NV12,width=$iw,height=$ih,framerate=30/1"
  vsr="flashvsr model-dir=$model device=cuda"
  sys_ms=$(per_frame_ms "$src ! queue ! $vsr ! video/x-raw,format=NV12 ! fakesink sync=false")
  cuda_ms=$(per_frame_ms "$src ! cudaupload ! $cuda ! queue ! $vsr ! $cuda,format=NV12 ! fakesink sync=false")
  # The two copies: the input's upload (in-element on the system-memory path) and the output's download.
  up_base=$(per_frame_ms "$src ! fakesink sync=false")
  up_ms=$(per_frame_ms "$src ! cudaupload ! $cuda ! fakesink sync=false")
  osrc="videotestsrc num-buffers=@N@ pattern=ball ! video/x-raw,format=NV12,width=$ow,height=$oh,framerate=30/1 ! cudaupload ! $cuda"
  down_base=$(per_frame_ms "$osrc ! fakesink sync=false")
  down_ms=$(per_frame_ms "$osrc ! cudadownload ! video/x-raw,format=NV12 ! fakesink sync=false")
  python3 - "$size" "$sys_ms" "$cuda_ms" "$up_base" "$up_ms" "$down_base" "$down_ms" <<'EOF'
import json, sys
size, sys_ms, cuda_ms, up0, up, down0, down = sys.argv[1], *map(float, sys.argv[2:])
copies = max(up - up0, 0.0) + max(down - down0, 0.0)
print(json.dumps({
    "size": size, "input": "NV12",
    "system_memory_fps": round(1000 / sys_ms, 2), "cuda_memory_fps": round(1000 / cuda_ms, 2),
    "system_memory_ms_per_frame": sys_ms, "cuda_memory_ms_per_frame": cuda_ms,
    "gain_ms_per_frame": round(sys_ms - cuda_ms, 3),
    "upload_ms_per_frame": round(up - up0, 3), "download_ms_per_frame": round(down - down0, 3),
    "copies_ms_per_frame": round(copies, 3),
    "gain_covers_copies": sys_ms - cuda_ms >= copies}))
EOF
done
