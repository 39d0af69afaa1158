#!/bin/sh
# Makes a short test clip with ffmpeg's testsrc (colour bars, a moving gradient and a frame counter), for the
# source tests and the demo. Usage: scripts/make-test-clip.sh OUT.mp4 [SECONDS=5] [FPS=10] [SIZE=320x240]
# H.264 (libx264) when this ffmpeg has it, MPEG-4 part 2 otherwise; no audio. Overwrites OUT.
set -eu
if [ $# -lt 1 ]; then
  echo "usage: $0 OUT.mp4 [SECONDS=5] [FPS=10] [SIZE=320x240]" >&2
  exit 2
fi
out=$1
seconds=${2:-5}
fps=${3:-10}
size=${4:-320x240}
if ! command -v ffmpeg >/dev/null 2>&1; then
  echo "$0: ffmpeg not found: install it (apt-get install ffmpeg)" >&2
  exit 127
fi
if ffmpeg -hide_banner -encoders 2>/dev/null | grep -q libx264; then
  # A keyframe every second keeps seeking and looping cheap.
  codec="-c:v libx264 -preset veryfast -pix_fmt yuv420p -g $fps"
else
  codec="-c:v mpeg4 -q:v 4 -g $fps"
fi
# shellcheck disable=SC2086 # $codec is a list of words
ffmpeg -hide_banner -nostdin -loglevel error -y -f lavfi -i "testsrc=size=$size:rate=$fps:duration=$seconds" $codec -an "$out"
