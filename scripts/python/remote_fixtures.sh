# Run on the GPU machine (PyTorch + transformers 5.x + onnx + onnxruntime): regenerates test/fixtures/tiny-seed0.
set -u
python3 -c "import transformers,torch,onnx,onnxruntime,PIL,tokenizers;print('versions',transformers.__version__,torch.__version__,onnx.__version__,onnxruntime.__version__,PIL.__version__,tokenizers.__version__)"
mkdir -p /tmp/fx
python3 scripts/python/make_fixtures.py --out /tmp/fx/tiny-seed0 > /tmp/fx/log0.txt 2>&1; echo "rc=$?"; tail -3 /tmp/fx/log0.txt
rm -f /tmp/fx/tiny-seed0/onnx/decoder_{model,with_past_model}_{fp16,quantized}.onnx
[ -d /tmp/fx/tiny-seed0 ] && tar czf $OUT/tiny-seed0.tgz -C /tmp/fx tiny-seed0
